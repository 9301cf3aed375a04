"""Log-mel frontend in plain torch (no torchaudio).

Shapes: N items, S samples, F = n_fft // 2 + 1 frequency bins, M mel bands,
T = 1 + S // hop frames (centred STFT).

Eager calls take the STFT with ``torch.stft`` (an FFT). While tracing (ONNX and
TorchScript export) it is a strided ``conv1d`` with a fixed windowed-DFT basis instead:
that equals ``torch.stft`` to float32 rounding and, unlike it (complex output), exports as
plain real-valued ops, but it does the full DFT's work (about twice the FFT's time here).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _hz_to_mel(hz: float) -> float:
    return 2595.0 * math.log10(1.0 + hz / 700.0)


def dft_basis(n_fft: int) -> torch.Tensor:
    """Hann-windowed real DFT, ``[2F, 1, n_fft]``: F cosine rows, then F (negated) sine rows.

    Convolving a signal with it gives the real and imaginary parts of ``torch.stft`` with
    ``window=torch.hann_window(n_fft)``, ``onesided=True``. Built in float64, stored float32.
    """
    n = torch.arange(n_fft, dtype=torch.float64)  # [n_fft]
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)  # [F]
    angle = 2.0 * math.pi * torch.outer(k, n) / n_fft  # [F, n_fft]
    window = torch.hann_window(n_fft, dtype=torch.float64)  # periodic, as torch.stft's default
    basis = torch.cat([torch.cos(angle), -torch.sin(angle)]) * window  # [2F, n_fft]
    return basis.unsqueeze(1).to(torch.float32)


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

    Hann window of ``n_fft`` samples, ``hop`` samples apart, centred with reflect padding
    (as ``torch.stft(center=True)``); the defaults are 25 ms / 10 ms at 16 kHz. The DFT
    basis and the filterbank are non-persistent buffers, so they follow ``.to()`` and are
    not part of a checkpoint.
    """

    basis: torch.Tensor
    window: torch.Tensor
    fbank: torch.Tensor

    def __init__(
        self, sample_rate: int = 16_000, n_mels: int = 40, n_fft: int = 400, hop: int = 160
    ) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.hop = hop
        self.n_mels = n_mels
        self.register_buffer("basis", dft_basis(n_fft), persistent=False)  # [2F, 1, n_fft]
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)  # [n_fft]
        fbank = mel_filterbank(n_fft // 2 + 1, n_mels, sample_rate)
        self.register_buffer("fbank", fbank, persistent=False)

    def frames(self, samples: int) -> int:
        """How many frames ``samples`` samples give."""
        return 1 + samples // self.hop

    def power_fft(self, wave: torch.Tensor) -> torch.Tensor:
        """``[N, S]`` -> STFT power ``[N, F, T]`` by ``torch.stft``."""
        spec = torch.stft(
            wave, self.n_fft, self.hop, window=self.window, center=True, pad_mode="reflect",
            return_complex=True,
        )  # fmt: skip
        return torch.view_as_real(spec).square().sum(dim=-1)  # [N, F, T]

    def power_dft(self, wave: torch.Tensor) -> torch.Tensor:
        """``[N, S]`` -> STFT power ``[N, F, T]`` by the DFT basis, in real-valued ops."""
        half = self.n_fft // 2
        padded = F.pad(wave.unsqueeze(1), (half, half), mode="reflect")  # [N, 1, S + n_fft]
        parts = F.conv1d(padded, self.basis, stride=self.hop)  # [N, 2F, T]: real, then imaginary
        re, im = parts.chunk(2, dim=1)  # [N, F, T] each
        return re.square() + im.square()

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if wave.dim() != 2:
            raise ValueError(f"LogMel expects [N, samples], got {tuple(wave.shape)}")
        wave = wave.float()
        tracing = torch.jit.is_tracing()  # type: ignore[attr-defined, no-untyped-call]
        power = self.power_dft(wave) if tracing else self.power_fft(wave)
        mel = torch.matmul(self.fbank.t(), power)  # [M, F] @ [N, F, T] -> [N, M, T]
        return torch.log(mel + 1e-6)
