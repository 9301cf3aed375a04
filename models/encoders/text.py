"""Text-event encoder: byte embeddings and a GRU over packed sequences.

Shapes: N events, L byte positions (padded), E byte-embedding width, D = d_model.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from models.tokenizer import PAD, VOCAB_SIZE

_EMBED = 64
_HIDDEN = 128


class TextEncoder(nn.Module):
    """ids int64 ``[N, L]`` + lengths int64 ``[N]`` -> ``[N, D]``.

    The GRU runs over exactly ``lengths[i]`` bytes of row i (packed), so padding never
    changes an embedding. An empty text (length 0) is read as a single padding byte.
    """

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB_SIZE, _EMBED, padding_idx=PAD)
        self.gru = nn.GRU(_EMBED, _HIDDEN, batch_first=True)
        self.norm = nn.LayerNorm(_HIDDEN)
        self.proj = nn.Linear(_HIDDEN, d_model)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if ids.dim() != 2 or lengths.shape != ids.shape[:1]:
            raise ValueError(
                f"TextEncoder expects ids [N, L] and lengths [N], got {tuple(ids.shape)} "
                f"and {tuple(lengths.shape)}"
            )
        lengths_cpu = lengths.detach().to("cpu", torch.int64).clamp(1, ids.shape[1])  # [N]
        x = self.embed(ids)  # [N, L, E]
        packed = pack_padded_sequence(x, lengths_cpu, batch_first=True, enforce_sorted=False)
        _, h_n = self.gru(packed)  # [1, N, H], back in the input order
        out: torch.Tensor = self.proj(self.norm(h_n[0]))  # [N, D]
        return out
