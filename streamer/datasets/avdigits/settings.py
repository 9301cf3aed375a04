"""The layout of AV-digits media and the knobs that set how hard each modality is.

Each modality is corrupted independently (its own random stream per segment), so a
segment where one modality fails usually still has another that works.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")
SPLIT_CODE: dict[Split, int] = {"train": 0, "test": 1}
LIVE_SPLIT: Split = "test"  # live content uses held-out images and voices

NS = 1_000_000_000


def segment_rng(seed: int, split: Split, stream: int, index: int) -> np.random.Generator:
    """The random stream ``stream`` (labels, video, audio, text...) of one segment."""
    return np.random.default_rng([seed, SPLIT_CODE[split], stream, index])


@dataclass(frozen=True)
class Layout:
    """Geometry and rates. ``segment_s * audio_rate`` must be a whole number of samples."""

    width: int = 128  # canvas in pixels; the runtime converts to the model's size once
    height: int = 128
    fps: int = 10  # video frames per second in the clips
    audio_rate: int = 16_000  # mono, the model's rate (no resampling at the runtime)
    segment_s: float = 3.0  # one labelled digit per segment

    @property
    def segment_ns(self) -> int:
        return round(self.segment_s * NS)

    @property
    def segment_samples(self) -> int:
        return round(self.segment_s * self.audio_rate)


@dataclass(frozen=True)
class Difficulty:
    """Probabilities and ranges of the corruptions, per modality (a segment draws each)."""

    # video
    video_absent: float = 0.15  # no digit: an empty, cluttered frame
    video_distractor: float = 0.03  # (of all segments) a DIFFERENT digit is shown
    video_noise: tuple[float, float] = (4.0, 30.0)  # gaussian sigma, 0-255 scale
    video_blur: float = 0.45  # chance of a blur of radius 1-3 px
    video_occluders: tuple[int, int] = (0, 2)  # moving patches over the digit
    video_contrast: tuple[float, float] = (0.5, 1.0)  # digit/background contrast
    video_size: tuple[float, float] = (45.0, 90.0)  # digit height in pixels
    video_frame_dropout: float = 0.15  # single frames where the digit is missing
    # audio
    audio_absent: float = 0.15  # noise only
    audio_distractor: float = 0.03  # (of all segments) a DIFFERENT digit is spoken
    audio_snr_db: tuple[float, float] = (-8.0, 12.0)
    audio_repeat: float = 0.3  # the word is said twice
    speed_jitter: float = 0.08  # extra +-8 % tempo by resampling
    # text
    text_absent: float = 0.2  # no text event in the segment
    text_misleading: float = 0.06  # events that only name other numbers
    text_correction: float = 0.3  # "not 3, it's 7": a distractor next to the label
    text_typo: float = 0.35  # chance that an event has typos
    text_filler: float = 0.5  # chance of an extra event that names no digit

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Settings:
    layout: Layout = field(default_factory=Layout)
    difficulty: Difficulty = field(default_factory=Difficulty)

    def to_dict(self) -> dict[str, Any]:
        return {"layout": asdict(self.layout), "difficulty": self.difficulty.to_dict()}


DEFAULT = Settings()
