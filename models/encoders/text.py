"""Text-event encoder: byte embeddings and a GRU, read at each text's last byte.

Shapes: N events, L byte positions (padded), E byte-embedding width, D = d_model.
"""

from __future__ import annotations

import torch
from torch import nn

from models.tokenizer import PAD, VOCAB_SIZE

_EMBED = 64
_HIDDEN = 128


class TextEncoder(nn.Module):
    """ids int64 ``[N, L]`` + lengths int64 ``[N]`` -> ``[N, D]``.

    Row i's embedding is the GRU state after exactly ``lengths[i]`` bytes (the output at
    step ``lengths[i] - 1``; a unidirectional GRU never looks ahead), so padding never
    changes an embedding. An empty text (length 0) is read as a single padding byte.
    Gathering instead of packing keeps the graph free of data-dependent shapes, so the
    same code exports to ONNX and TorchScript.
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
        x = self.embed(ids)  # [N, L, E]
        steps, _ = self.gru(x)  # [N, L, H]
        # steps to read, lengths clamped to [1, L]; counted, not sized, so traces stay dynamic
        position = torch.ones_like(ids).cumsum(1)  # [N, L]: 1 .. L
        wanted = lengths.to(device=ids.device, dtype=torch.int64).clamp(min=1).unsqueeze(1)
        count = (position <= wanted).sum(1)  # [N]
        index = (count - 1).view(-1, 1, 1).expand(-1, 1, steps.shape[2])  # [N, 1, H]
        h = steps.gather(1, index).squeeze(1)  # [N, H]
        out: torch.Tensor = self.proj(self.norm(h))  # [N, D]
        return out
