"""What one segment holds, derived from ``(seed, split, index)`` alone.

The label sequence has no two equal neighbours: segments come in blocks of ten, each a
permutation of the digits; a block whose first digit would repeat the previous block's
last swaps its first two (the last digit never moves, so no block depends on another's
fix). Video, audio and text draw from separate random streams, so their corruptions are
independent.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from streamer.datasets.avdigits.images import plan_video
from streamer.datasets.avdigits.settings import DEFAULT, Settings, Split, segment_rng
from streamer.datasets.avdigits.speech import AudioPlan, plan_audio
from streamer.datasets.avdigits.text import TextPlan, plan_text
from streamer.datasets.common.frames import VideoPlan

LABELS, VIDEO, AUDIO, TEXT = range(4)


@lru_cache(maxsize=1024)
def _block(seed: int, split: Split, block: int) -> tuple[int, ...]:
    return tuple(int(x) for x in segment_rng(seed, split, LABELS, block).permutation(10))


def label_of(seed: int, split: Split, index: int) -> int:
    block, pos = divmod(index, 10)
    perm = list(_block(seed, split, block))
    if block > 0 and perm[0] == _block(seed, split, block - 1)[9]:
        perm[0], perm[1] = perm[1], perm[0]
    return perm[pos]


@dataclass(frozen=True)
class SegmentPlan:
    seed: int
    split: Split
    index: int
    label: int
    video: VideoPlan
    audio: AudioPlan
    text: TextPlan


@lru_cache(maxsize=256)
def plan_segment(seed: int, split: Split, index: int, settings: Settings = DEFAULT) -> SegmentPlan:
    if index < 0:
        raise ValueError(f"segment index must be >= 0, got {index}")
    label = label_of(seed, split, index)
    d, layout = settings.difficulty, settings.layout
    return SegmentPlan(
        seed=seed,
        split=split,
        index=index,
        label=label,
        video=plan_video(segment_rng(seed, split, VIDEO, index), label, split, d, layout),
        audio=plan_audio(segment_rng(seed, split, AUDIO, index), label, split, d),
        text=plan_text(segment_rng(seed, split, TEXT, index), label, d, layout),
    )
