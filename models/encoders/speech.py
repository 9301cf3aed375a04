"""Speech encoders whose weights ship inside a package (``pip install 'streamer[pretrained]'``).

- ``silero-vad`` (audio): Silero VAD v6 (``silero-vad``, MIT), its ``silero_vad.onnx``
  (2.3 MB) run through plain onnxruntime, neither torch.jit nor the package's own code.

Each audio segment (resampled to 16 kHz when the spec's rate differs) is cut into the
VAD's 32 ms chunks of 512 samples (the last one ends at the segment's end, overlapping its
neighbour rather than padded with zeros); each chunk is preceded by the 64 samples before
it, as the streaming model expects, and the chunks run in order from a zero state, all
segments of a call at once (the state has a batch axis). The embedding (258-d) is the
final LSTM state (h and c, 2 x 128) then the segment's speech score and its best chunk's
probability. The speech score is the mean speech probability of the chunks after the first
(the first is the VAD warming up from its zero state): about the fraction of the segment
that is voice. The tagger gives ``("speech", score)`` per segment; silence and noise stay
near 0.05, below the tags' 0.1 floor (:data:`models.tags.MIN_SCORE`).

The backbone runs outside torch: an ONNX export holds its projection alone and the ONNX
runtime runs the VAD beside it (:mod:`models.export_backbones`); TorchScript refuses it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from models.encoders.frozen import FrozenEncoder, Provenance
from models.encoders.pretrained import PretrainedInfo, _import, _provenance
from models.encoders.registry import register
from models.spec import ModelSpec
from models.tags import ItemTags

VAD_RATE = 16_000
CHUNK = 512  # samples per VAD step at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous chunk each step sees first
STATE = 128  # LSTM width; the state is [2, N, STATE]
VAD_DIM = 2 * STATE + 2
SCORE = 2 * STATE  # the speech score's column in the features
SPEECH_TAG = "speech"

SPEECH = (PretrainedInfo("silero-vad", "audio", "silero-vad", VAD_DIM, "MIT"),)

F32 = npt.NDArray[np.float32]


def chunk_starts(samples: int) -> list[int]:
    """Where each 512-sample chunk of a ``samples``-long 16 kHz segment starts."""
    if samples <= CHUNK:
        return [0]
    starts = list(range(0, samples - CHUNK + 1, CHUNK))
    if starts[-1] + CHUNK < samples:
        starts.append(samples - CHUNK)
    return starts


@functools.cache
def _session(path: str) -> Any:
    ort = _import("onnxruntime", "onnxruntime")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # a tiny graph: threads cost more than they give
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


class SileroVad:
    """float32 waves ``[N, S]`` at ``rate`` Hz -> ``[N, 258]``: the VAD's final state, the
    speech score and the best chunk; :meth:`tags` reads ``("speech", score)`` per segment
    from those features (the VAD runs once per segment)."""

    def __init__(self, path: Path, rate: int) -> None:
        self.session = _session(str(path))
        self.rate = rate

    def _waves(self, wave: torch.Tensor) -> F32:
        if wave.dim() != 2:
            raise ValueError(f"silero-vad expects [N, samples], got {tuple(wave.shape)}")
        x = wave.detach().float().cpu()
        if self.rate != VAD_RATE:
            size = max(1, round(x.shape[1] * VAD_RATE / self.rate))
            x = nn.functional.interpolate(x[:, None], size=size, mode="linear")[:, 0]
        return np.ascontiguousarray(x.numpy(), dtype=np.float32)

    def run(self, x: F32) -> tuple[F32, F32]:
        """16 kHz waves ``[N, S]`` -> (embeddings ``[N, 258]``, speech scores ``[N]``)."""
        n, s = x.shape
        padded = np.zeros((n, CONTEXT + max(s, CHUNK)), np.float32)
        padded[:, CONTEXT : CONTEXT + s] = x
        state = np.zeros((2, n, STATE), np.float32)
        sr = np.array(VAD_RATE, dtype=np.int64)
        probs = []
        for start in chunk_starts(s):  # padded[start] is CONTEXT samples before the chunk
            step = padded[:, start : start + CONTEXT + CHUNK]
            out, state = self.session.run(None, {"input": step, "state": state, "sr": sr})
            probs.append(out[:, 0])
        p = np.stack(probs, axis=1)  # [N, chunks]
        score = (p[:, 1:] if p.shape[1] > 1 else p).mean(axis=1)
        emb = np.concatenate(
            [state.transpose(1, 0, 2).reshape(n, 2 * STATE), score[:, None], p.max(1)[:, None]],
            axis=1,
        ).astype(np.float32)
        return emb, score.astype(np.float32)

    def __call__(self, wave: torch.Tensor) -> torch.Tensor:
        emb, _ = self.run(self._waves(wave))
        return torch.from_numpy(emb).to(wave.device)

    @staticmethod
    def tags(features: torch.Tensor) -> list[ItemTags]:
        """Features ``[N, 258]`` -> ``(("speech", score),)`` per segment."""
        return [((SPEECH_TAG, float(v)),) for v in features[:, SCORE].tolist()]


def silero_vad(rate: int = VAD_RATE) -> tuple[SileroVad, Provenance]:
    """The VAD for waves at ``rate`` Hz and where its weights come from."""
    mod = _import("silero_vad", "silero-vad")
    path = Path(str(mod.__file__)).parent / "data" / "silero_vad.onnx"
    prov = _provenance("silero-vad", "silero-vad", path, "MIT")
    return SileroVad(path, rate), prov


@register("audio", "silero-vad")
def _build_silero_vad(spec: ModelSpec, options: Mapping[str, Any]) -> nn.Module:
    if options:
        raise ValueError(f"silero-vad takes no options, got {', '.join(sorted(options))}")
    backbone, prov = silero_vad(spec.audio_rate)
    return FrozenEncoder(
        backbone, dim=VAD_DIM, d_model=spec.d_model, provenance=prov, tagger=backbone.tags
    )
