"""Log-mel frontend in plain torch (no torchaudio).

Shapes: N items, S samples, F = n_fft // 2 + 1 frequency bins, M mel bands,
T = 1 + S // hop frames (centred STFT).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _hz_to_mel(hz: float) -> float:
    return 2595.0 * math.log10(1.0 + hz / 700.0)


def mel_filterbank(n_freqs: int, n_mels: int, sample_rate: int) -> torch.Tensor:
    """Triangular HTK mel filters, ``[F, M]``, no area normalisation (as torchaudio's default)."""
    all_freqs = torch.linspace(0.0, sample_rate / 2, n_freqs, dtype=torch.float64)  # [F]
    m_max = _hz_to_mel(sample_rate / 2)
    m_pts = torch.linspace(0.0, m_max, n_mels + 2, dtype=torch.float64)  # [M + 2]
    f_pts = 700.0 * (10.0 ** (m_pts / 2595.0) - 1.0)  # [M + 2]
    f_diff = f_pts[1:] - f_pts[:-1]  # [M + 1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)  # [F, M + 2]
    down = -slopes[:, :-2] / f_diff[:-1]  # [F, M]
    up = slopes[:, 2:] / f_diff[1:]  # [F, M]
    return torch.clamp(torch.minimum(down, up), min=0.0).to(torch.float32)


class LogMel(nn.Module):
    """``[N, S]`` float32 waveform -> ``[N, M, T]`` log-mel power, ``log(mel + 1e-6)``.

    Hann window of ``n_fft`` samples, ``hop`` samples apart; the defaults are 25 ms / 10 ms
    at 16 kHz. Both the window and the filterbank are buffers, so they follow ``.to()``.
    """

    window: torch.Tensor
    fbank: torch.Tensor

    def __init__(
        self, sample_rate: int = 16_000, n_mels: int = 40, n_fft: int = 400, hop: int = 160
    ) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.hop = hop
        self.n_mels = n_mels
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        fbank = mel_filterbank(n_fft // 2 + 1, n_mels, sample_rate)
        self.register_buffer("fbank", fbank, persistent=False)

    def frames(self, samples: int) -> int:
        """How many frames ``samples`` samples give."""
        return 1 + samples // self.hop

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if wave.dim() != 2:
            raise ValueError(f"LogMel expects [N, samples], got {tuple(wave.shape)}")
        spec = torch.stft(
            wave.float(),
            n_fft=self.n_fft,
            hop_length=self.hop,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )  # [N, F, T] complex
        power = spec.real.square() + spec.imag.square()  # [N, F, T]
        mel = torch.matmul(self.fbank.t(), power)  # [M, F] @ [N, F, T] -> [N, M, T]
        return torch.log(mel + 1e-6)
