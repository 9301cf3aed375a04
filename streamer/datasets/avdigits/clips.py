"""One clip: ``clip_NNNN.mp4`` (H.264 + AAC) and ``clip_NNNN.jsonl`` (text events).

A clip is ``segments`` consecutive segments of a split's sequence, starting at
``first``; the format and its reproducibility are :mod:`streamer.datasets.common.media`'s.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from streamer.datasets.avdigits import live
from streamer.datasets.avdigits.plan import plan_segment
from streamer.datasets.avdigits.settings import NS, Settings, Split
from streamer.datasets.common.media import Segment, write_events, write_mp4

__all__ = ["Segment", "write_clip"]


def write_clip(mp4: Path, jsonl: Path, *, seed: int, split: Split, first: int, segments: int,
               settings: Settings) -> list[Segment]:  # fmt: skip
    layout = settings.layout
    origin_ns = first * layout.segment_ns
    n_frames = segments * layout.segment_ns * layout.fps // NS
    audio = live.audio_samples(
        seed, first * layout.segment_samples, segments * layout.segment_samples,
        split=split, settings=settings,
    )  # fmt: skip

    def frame(vi: int) -> npt.NDArray[np.uint8]:
        t_ns = origin_ns + vi * NS // layout.fps
        return live.frame_at(seed, t_ns, split=split, settings=settings)

    write_mp4(mp4, layout, n_frames, frame, audio)
    write_events(
        jsonl,
        (
            (round(t - first * layout.segment_s, 3), text)
            for k in range(segments)
            for t, text in live.text_events(seed, first + k, split=split, settings=settings)
        ),
    )
    return [
        Segment(
            k * layout.segment_s,
            (k + 1) * layout.segment_s,
            str(plan_segment(seed, split, first + k, settings).label),
        )
        for k in range(segments)
    ]
