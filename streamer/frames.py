"""Small typed data passed between stages.

Every item carries the stream id and ``pts_ns``: its capture time on the node clock
(epoch nanoseconds, derived from a monotonic clock; see :mod:`streamer.clock`). Time is
converted to ns once, at the source.

    VideoFrame   one picture, already at the model's size, RGB uint8 [H, W, 3]
    AudioChunk   consecutive mono float32 samples at the model's rate, from pts_ns on
    TextEvent    one text event
    Window       what the aligner hands to inference: one event-time window of a stream
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

Modality = Literal["video", "audio", "text"]
MODALITIES: tuple[Modality, ...] = ("video", "audio", "text")

NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class VideoFrame:
    stream: str
    pts_ns: int
    image: npt.NDArray[np.uint8]  # [H, W, 3] RGB, the model's size


@dataclass(frozen=True, slots=True)
class AudioChunk:
    stream: str
    pts_ns: int  # time of samples[0]
    samples: npt.NDArray[np.float32]  # [n] mono, in [-1, 1]
    rate: int

    @property
    def end_ns(self) -> int:
        return self.pts_ns + len(self.samples) * NS // self.rate


@dataclass(frozen=True, slots=True)
class TextEvent:
    stream: str
    pts_ns: int
    text: str


Item = VideoFrame | AudioChunk | TextEvent


def modality_of(item: Item) -> Modality:
    if isinstance(item, VideoFrame):
        return "video"
    if isinstance(item, AudioChunk):
        return "audio"
    return "text"


@dataclass(frozen=True, slots=True)
class Window:
    """One event-time window ``[start_ns, end_ns)`` of one stream.

    video       one entry per video slot (``length * fps`` slots of ``1/fps`` s each):
                the frame nearest the slot's centre, or None
    audio       [length * rate] float32, zero where no sample arrived
    audio_mask  [length * rate] bool, True where a sample arrived
    texts       the text events with start_ns <= pts_ns < end_ns, in pts order
    present     per modality: did it contribute to this window
    cut_ns      None for a whole window; else the node time its data stops at (a stop,
                or the end of its sources) although the window runs on past it
    """

    stream: str
    start_ns: int
    end_ns: int
    video: tuple[VideoFrame | None, ...]
    audio: npt.NDArray[np.float32]
    audio_mask: npt.NDArray[np.bool_]
    audio_rate: int
    texts: tuple[TextEvent, ...]
    present: Mapping[Modality, bool]
    cut_ns: int | None = None

    @property
    def partial(self) -> bool:
        """Cut short: the window was emitted before data past its end could arrive."""
        return self.cut_ns is not None

    @property
    def frames(self) -> int:
        return sum(1 for f in self.video if f is not None)

    @property
    def audio_seconds(self) -> float:
        return float(np.count_nonzero(self.audio_mask)) / self.audio_rate
