"""The fusion transformer at inference: plain ops, and only what the CLS output needs.

Shapes: B windows, T tokens (CLS first), Q query tokens, D model width, h heads.

``FusionModel`` trains an ``nn.TransformerEncoder`` (pre-norm, batch first) and reads its
output at token 0 (CLS) only. So in the last layer only CLS needs a query, an attention
output and a feed-forward pass; the keys and values of all T tokens are still needed.
:func:`cls_readout` computes exactly that (at T = 19, D = 128 the last layer's work falls
by about 3/4); every earlier layer runs in full. Eval mode only: there is no dropout here.

Plain ops rather than ``nn.MultiheadAttention``, and for that reason one function serves
inference and export: the ONNX exporter traces the module's packed in-projection
(``unflatten``) with the sequence length as a constant, so a graph traced at one window
length would fail at another; here every reshape keeps the token axis symbolic (``-1``).
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``[B, T, D]`` -> ``[B, h, T, D / h]``."""
    return x.reshape(x.shape[0], -1, heads, x.shape[2] // heads).transpose(1, 2)


def _attend(
    attn: nn.MultiheadAttention, query: torch.Tensor, x: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """``query`` [B, Q, D] attends over ``x`` [B, T, D]; ``bias`` [B, 1, 1, T] -> [B, Q, D]."""
    heads, d = attn.num_heads, attn.embed_dim
    weight, in_bias = attn.in_proj_weight, attn.in_proj_bias
    q = _heads(F.linear(query, weight[:d], in_bias[:d]), heads)  # [B, h, Q, D / h]
    k, v = (_heads(t, heads) for t in F.linear(x, weight[d:], in_bias[d:]).chunk(2, dim=-1))
    scores = torch.matmul(q * (d // heads) ** -0.5, k.transpose(2, 3)) + bias  # [B, h, Q, T]
    out = torch.matmul(torch.softmax(scores, dim=-1), v)  # [B, h, Q, D / h]
    return cast(torch.Tensor, attn.out_proj(out.transpose(1, 2).reshape(query.shape[0], -1, d)))


def cls_readout(
    encoder: nn.TransformerEncoder, tokens: torch.Tensor, present: torch.Tensor
) -> torch.Tensor:
    """``encoder(tokens, src_key_padding_mask=~present)[:, 0]`` in eval mode -> ``[B, D]``.

    ``tokens`` [B, T, D]; ``present`` bool [B, T], True where a token takes part (CLS must).
    """
    zeros = torch.zeros_like(present, dtype=tokens.dtype)  # [B, T]
    bias = zeros.masked_fill(~present, float("-inf"))[:, None, None, :]  # [B, 1, 1, T]
    layers = cast(list[nn.TransformerEncoderLayer], list(encoder.layers))
    x = tokens
    for i, layer in enumerate(layers):
        if not layer.norm_first:
            raise ValueError("cls_readout needs pre-norm layers (norm_first=True)")
        h = layer.norm1(x)  # [B, T, D]
        query = h
        if i == len(layers) - 1:  # from here on only CLS
            x, query = x[:, :1], h[:, :1]  # [B, 1, D]
        x = x + _attend(layer.self_attn, query, h, bias)
        x = x + layer.linear2(layer.activation(layer.linear1(layer.norm2(x))))
    if encoder.norm is not None:
        x = encoder.norm(x)
    return x[:, 0]
