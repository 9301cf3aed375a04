"""Plain per-window inputs, and their collation into a ``FullBatch`` for full recompute.

Shapes: B windows, Tv / Ta / Tt the most video slots / audio segments / text events of any
window (shorter windows are padded and masked), H x W x 3 frames, S samples per segment,
L the longest encoded text.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from models.fusion import FullBatch
from models.spec import ModelSpec
from models.tokenizer import batch_encode


@dataclass(frozen=True, slots=True)
class WindowInputs:
    """One window of one session, in slot order; ``None`` marks a missing slot."""

    session: Hashable  # whose cache (the runtime passes a stream id)
    video: Sequence[tuple[Hashable, np.ndarray] | None]  # per slot: (key, uint8 [H, W, 3])
    audio: Sequence[tuple[Hashable, np.ndarray] | None]  # per segment: (key, float32 [S])
    text: Sequence[tuple[Hashable, str, float]]  # (key, text, offset s from window start)


def collate(windows: Sequence[WindowInputs], spec: ModelSpec) -> FullBatch:
    """Raw tensors of ``windows`` (keys ignored), for ``FusionModel.forward``.

    Every text event is kept; ``forward`` attends to the ``max_text_events`` most recent.
    """
    b = len(windows)
    tv = max([0, *(len(w.video) for w in windows)])
    ta = max([0, *(len(w.audio) for w in windows)])
    tt = max([0, *(len(w.text) for w in windows)])
    shape = next(
        (np.shape(item[1]) for w in windows for item in w.video if item is not None),
        (spec.image_size, spec.image_size, 3),
    )
    video = np.zeros((b, tv, *shape), dtype=np.uint8)
    video_mask = np.zeros((b, tv), dtype=bool)
    audio = np.zeros((b, ta, spec.segment_samples), dtype=np.float32)
    audio_mask = np.zeros((b, ta), dtype=bool)
    for i, w in enumerate(windows):
        for j, v in enumerate(w.video):
            if v is not None:
                video[i, j], video_mask[i, j] = v[1], True
        for j, a in enumerate(w.audio):
            if a is not None:
                audio[i, j], audio_mask[i, j] = a[1], True
    ids, lengths = batch_encode([t[1] for w in windows for t in w.text], spec.text_max_bytes)
    text_ids = torch.zeros((b, tt, ids.shape[1]), dtype=torch.int64)
    text_lengths = torch.zeros((b, tt), dtype=torch.int64)
    text_mask = torch.zeros((b, tt), dtype=torch.bool)
    text_pos = torch.zeros((b, tt), dtype=torch.float32)
    row = 0
    for i, w in enumerate(windows):
        n = len(w.text)
        text_ids[i, :n] = ids[row : row + n]
        text_lengths[i, :n] = lengths[row : row + n]
        text_mask[i, :n] = True
        text_pos[i, :n] = torch.tensor([t[2] for t in w.text], dtype=torch.float32)
        row += n
    return FullBatch(
        video=torch.from_numpy(video),
        video_mask=torch.from_numpy(video_mask),
        audio=torch.from_numpy(audio),
        audio_mask=torch.from_numpy(audio_mask),
        text_ids=text_ids,
        text_lengths=text_lengths,
        text_mask=text_mask,
        text_pos_s=text_pos,
    )


@runtime_checkable
class Batches(Protocol):
    """Windows that make their own batches: ``len()`` windows, ``batch(idx)`` the
    :class:`FullBatch` of those (training's embedding cache supplies features this way)."""

    def __len__(self) -> int: ...

    def batch(self, idx: Sequence[int]) -> FullBatch: ...


class Collated:
    """:class:`Batches` of plain :class:`WindowInputs`, through :func:`collate`."""

    def __init__(self, windows: Sequence[WindowInputs], spec: ModelSpec) -> None:
        self.windows = windows
        self.spec = spec

    def __len__(self) -> int:
        return len(self.windows)

    def batch(self, idx: Sequence[int]) -> FullBatch:
        return collate([self.windows[i] for i in idx], self.spec)


def as_batches(windows: Sequence[WindowInputs] | Batches, spec: ModelSpec) -> Batches:
    return windows if isinstance(windows, Batches) else Collated(windows, spec)
