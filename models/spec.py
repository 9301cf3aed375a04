"""What a model expects of its inputs; stored in a checkpoint's ``config.json``.

The runtime reads it to convert media once at the source (image size, audio rate) and
to cut windows into the model's time slots (``fps`` video slots and ``audio_segment``
audio segments per second, both aligned to epoch time).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelSpec:
    name: str = "avdigits-fusion"
    labels: tuple[str, ...] = tuple(str(d) for d in range(10))
    image_size: int = 64  # frames are RGB uint8 [image_size, image_size, 3]
    fps: int = 4  # video slots per second; one frame per slot
    audio_rate: int = 16_000  # mono float32
    audio_segment: float = 0.25  # seconds of audio per audio token
    n_mels: int = 40
    text_max_bytes: int = 256  # a text event is truncated to this many UTF-8 bytes
    max_text_events: int = 8  # most recent events kept per window
    max_positions: int = 256  # slots per window the time embedding covers
    d_model: int = 128
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def segment_samples(self) -> int:
        return round(self.audio_segment * self.audio_rate)

    @property
    def step(self) -> float:
        """The smallest time unit windows must be a multiple of, in seconds."""
        return max(1.0 / self.fps, self.audio_segment)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["labels"] = list(self.labels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "labels" in known:
            known["labels"] = tuple(str(x) for x in known["labels"])
        return cls(**known)
