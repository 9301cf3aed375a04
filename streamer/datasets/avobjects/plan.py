"""What one AV-objects segment holds, derived from ``(seed, split, index)`` alone.

Segment ``i`` of a split shows class ``i % len(CLASSES)``: the first ``K * classes``
segments hold K of each class, and a smaller K's set is a prefix of a larger one's.
Video, audio and text draw from separate random streams, so their corruptions (and
their absences) are independent, as in AV-digits.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from streamer.datasets.avdigits.plan import SegmentPlan
from streamer.datasets.avdigits.settings import Difficulty, Settings, Split, segment_rng
from streamer.datasets.avdigits.text import FILLER
from streamer.datasets.avobjects import pictures
from streamer.datasets.avobjects.classes import CLASSES, NAMES
from streamer.datasets.common import frames, speech, text
from streamer.datasets.common.frames import VideoPlan

VIDEO, AUDIO, TEXT = 1, 2, 3
# pictures are bigger than digits and drawn opaque-ish; the other knobs are AV-digits'
DIFFICULTY = replace(Difficulty(), video_size=(50.0, 100.0), video_contrast=(0.75, 1.0))
DEFAULT = Settings(difficulty=DIFFICULTY)

POSITIVE = (
    "I think it's a {L}",
    "look, a {L}",
    "there's a {L} on screen",
    "{L}",
    "that's a {L}",
    "a {L} again",
    "ok, {L}",
    "I see a {L}",
    "definitely a {L}",
    "is that a {L}? yes",
)
CORRECTION = (
    "not a {D}, it's a {L}",
    "I said {L}, not {D}",
    "{D}? no, {L}",
    "was a {D} before, now a {L}",
    "my {D} is fine, that one's a {L}",
)
MISLEADING = (
    "is it a {D}?",
    "maybe a {D}",
    "I have a {D} at home",
    "{D} or {D2}, hard to say",
    "looks like a {D}",
    "where did the {D} go",
)


def _name(rng: np.random.Generator, c: int) -> str:
    cls = CLASSES[c]
    if cls.synonyms and rng.random() < 0.3:
        return cls.synonyms[int(rng.integers(len(cls.synonyms)))]
    return cls.name


STYLE = text.TextStyle(len(CLASSES), _name, POSITIVE, CORRECTION, MISLEADING, FILLER)


def label_of(index: int) -> int:
    return index % len(CLASSES)


def name_of(plan: SegmentPlan) -> str:
    return NAMES[plan.label]


@lru_cache(maxsize=256)
def plan_segment(seed: int, split: Split, index: int, settings: Settings = DEFAULT) -> SegmentPlan:
    if index < 0:
        raise ValueError(f"segment index must be >= 0, got {index}")
    label = label_of(index)
    d, layout = settings.difficulty, settings.layout
    pool = pictures.pool(split)
    return SegmentPlan(
        seed=seed,
        split=split,
        index=index,
        label=label,
        video=frames.plan_video(segment_rng(seed, split, VIDEO, index), label, pool, d, layout),
        audio=speech.plan_audio(segment_rng(seed, split, AUDIO, index), label, split, d, NAMES),
        text=text.plan_text(segment_rng(seed, split, TEXT, index), label, d, layout, STYLE),
    )


def _draw(img: frames.F32, plan: VideoPlan, centre: tuple[float, float], size: float,
          angle: float) -> frames.F32:  # fmt: skip
    assert plan.image is not None
    h, w = img.shape[:2]
    sprite = frames.warp(pictures.sprites()[plan.image], w, h, centre, size, angle)
    alpha = sprite[..., 3:] * plan.contrast
    return np.asarray(img * (1 - alpha) + sprite[..., :3] * plan.contrast, dtype=np.float32)


def render_frame(plan: SegmentPlan, vi: int, settings: Settings) -> npt.NDArray[np.uint8]:
    """Frame ``vi`` (at ``vi / fps`` seconds) of the segment: RGB uint8 [h, w, 3]."""
    layout = settings.layout
    ms = vi * 1000 // layout.fps
    return frames.render(plan.video, vi / layout.fps, ms, layout, _draw)
