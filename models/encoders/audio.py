"""Audio-segment encoder: log-mel, a conv1d stack, then a GRU over mel frames.

Shapes: N segments, S samples per segment, M mel bands, T mel frames, D = d_model.
"""

from __future__ import annotations

import torch
from torch import nn

from models.features import LogMel

_CONV = 64
_HIDDEN = 128


class AudioEncoder(nn.Module):
    """float32 ``[N, S]`` -> ``[N, D]``: one embedding per audio segment.

    ``LogMel`` -> two conv1d blocks over time (GroupNorm, GELU; the second halves T) -> GRU;
    its last hidden state, layer-normed, is projected to D.
    """

    def __init__(self, d_model: int, sample_rate: int = 16_000, n_mels: int = 40) -> None:
        super().__init__()
        self.frontend = LogMel(sample_rate=sample_rate, n_mels=n_mels)
        self.convs = nn.Sequential(
            nn.Conv1d(n_mels, _CONV, kernel_size=3, padding=1),
            nn.GroupNorm(8, _CONV),
            nn.GELU(),
            nn.Conv1d(_CONV, _HIDDEN, kernel_size=3, stride=2, padding=1),
            nn.GroupNorm(8, _HIDDEN),
            nn.GELU(),
        )
        self.gru = nn.GRU(_HIDDEN, _HIDDEN, batch_first=True)
        self.norm = nn.LayerNorm(_HIDDEN)
        self.proj = nn.Linear(_HIDDEN, d_model)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if wave.dim() != 2:
            raise ValueError(f"AudioEncoder expects [N, samples], got {tuple(wave.shape)}")
        mel = self.frontend(wave)  # [N, M, T]
        x = self.convs(mel)  # [N, H, T / 2]
        _, h_n = self.gru(x.transpose(1, 2))  # h_n: [1, N, H]
        out: torch.Tensor = self.proj(self.norm(h_n[0]))  # [N, D]
        return out
