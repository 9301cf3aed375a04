"""AV-digits as a function of time, for the live source and for ground truth.

Time ``t`` (epoch seconds live, seconds from the start of a split's sequence in clips)
falls in segment ``floor(t / segment_s)``; everything in it is derived from ``(seed,
split, segment)``. Live content uses the test split (held-out images and voices), so a
viewer computes the truth of any window from its start and end alone:
``label_at(seed, window_start)``. The clip generator draws with these same functions: the
live stream at time t equals test clip k at ``t - k * clip_seconds`` for small t.

:data:`GENERATOR` serves this content to ``synthetic:avdigits`` (see
:mod:`streamer.generators`).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from streamer.datasets.avdigits import images, speech
from streamer.datasets.avdigits.plan import plan_segment
from streamer.datasets.avdigits.settings import DEFAULT, LIVE_SPLIT, NS, Settings, Split
from streamer.generators import Generator

F32 = npt.NDArray[np.float32]


def segment_index(t_s: float, settings: Settings = DEFAULT) -> int:
    """The segment that time ``t_s`` falls in."""
    return round(t_s * NS) // settings.layout.segment_ns


def label_at(seed: int, t_s: float, *, split: Split = LIVE_SPLIT,
             settings: Settings = DEFAULT) -> str:  # fmt: skip
    """The label ("0".."9") of the segment at ``t_s`` seconds."""
    return str(plan_segment(seed, split, segment_index(t_s, settings), settings).label)


def frame_at(seed: int, t_ns: int, *, split: Split = LIVE_SPLIT,
             settings: Settings = DEFAULT) -> npt.NDArray[np.uint8]:  # fmt: skip
    """RGB uint8 [height, width, 3] at ``t_ns`` nanoseconds (the layout's canvas)."""
    index, offset = divmod(t_ns, settings.layout.segment_ns)
    plan = plan_segment(seed, split, index, settings)
    return images.render(plan.video, offset / NS, offset // 1_000_000, settings.layout)


@lru_cache(maxsize=8)
def segment_audio(seed: int, split: Split, index: int, settings: Settings = DEFAULT) -> F32:
    """float32 [segment_samples]: segment ``index``'s audio."""
    out = speech.render(plan_segment(seed, split, index, settings).audio, settings.layout)
    out.setflags(write=False)
    return out


def audio_samples(seed: int, first: int, count: int, *, split: Split = LIVE_SPLIT,
                  settings: Settings = DEFAULT) -> F32:  # fmt: skip
    """float32 [count]: samples ``first .. first+count`` at ``layout.audio_rate``,
    sample 0 being time 0."""
    per = settings.layout.segment_samples
    out = np.empty(count, dtype=np.float32)
    done = 0
    while done < count:
        index, offset = divmod(first + done, per)
        take = min(per - offset, count - done)
        out[done : done + take] = segment_audio(seed, split, index, settings)[
            offset : offset + take
        ]
        done += take
    return out


def text_events(seed: int, index: int, *, split: Split = LIVE_SPLIT,
                settings: Settings = DEFAULT) -> list[tuple[float, str]]:  # fmt: skip
    """The text events of segment ``index``: (seconds from time 0, text), in time order."""
    start = index * settings.layout.segment_s
    plan = plan_segment(seed, split, index, settings)
    return [(start + u, text) for u, text in plan.text.events]


def text_between(seed: int, t0_s: float, t1_s: float | None = None, *,
                 split: Split = LIVE_SPLIT,
                 settings: Settings = DEFAULT) -> Iterator[tuple[float, str]]:  # fmt: skip
    """Text events with ``t0_s <= t < t1_s`` (endless when ``t1_s`` is None), in order."""
    index = segment_index(t0_s, settings)
    while t1_s is None or index * settings.layout.segment_s < t1_s:
        for t, text in text_events(seed, index, split=split, settings=settings):
            if t >= t0_s and (t1_s is None or t < t1_s):
                yield t, text
        index += 1


def audio_at_rate(seed: int, first: int, count: int, rate: int, *, split: Split = LIVE_SPLIT,
                  settings: Settings = DEFAULT) -> F32:  # fmt: skip
    """float32 [count]: samples ``first .. first+count`` at ``rate`` (linear interpolation
    from ``layout.audio_rate`` when the two differ)."""
    native = settings.layout.audio_rate
    if rate == native:
        return audio_samples(seed, first, count, split=split, settings=settings)
    lo = first * native // rate
    hi = (first + count) * native // rate + 2
    base = audio_samples(seed, lo, hi - lo, split=split, settings=settings)
    pos = (np.arange(count, dtype=np.float64) + first) * (native / rate) - lo
    return np.interp(pos, np.arange(hi - lo), base).astype(np.float32)


class LiveGenerator:
    """The live test-split content at the default settings, for ``synthetic:avdigits``."""

    def check(self) -> None:
        speech.require_espeak()  # EspeakMissing

    def frame_at(self, seed: int, t_ns: int) -> npt.NDArray[np.uint8]:
        return frame_at(seed, t_ns)

    def audio_at_rate(self, seed: int, first: int, count: int, rate: int) -> F32:
        return audio_at_rate(seed, first, count, rate)

    def text_between(self, seed: int, t0_s: float) -> Iterator[tuple[float, str]]:
        return text_between(seed, t0_s)

    def label_at(self, seed: int, t_s: float) -> str:
        return label_at(seed, t_s)


GENERATOR: Generator = LiveGenerator()
