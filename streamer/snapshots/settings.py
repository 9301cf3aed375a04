"""The ``snapshots:`` section of the config: the pictures kept for events and the page.

Per stream with video, when the config has ``events:`` or ``http:`` (and ``enabled``),
the node keeps the last ``seconds`` of frames at ``fps`` as JPEGs of ``width`` pixels
(height by aspect; 0: the source's size, never upscaled), at most ``max_bytes`` of them.
``quality`` is the JPEG quantiser scale (ffmpeg's ``-q:v``): 2 is the best and biggest,
31 the worst and smallest. ``draw``: the event's label and score drawn on its snapshot
(needs Pillow, ``pip install 'streamer[avobjects]'``).
"""

from __future__ import annotations

import importlib.util
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_WIDTH = 7680  # 8K UHD, the largest source a synthetic URL makes


class SnapshotsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    fps: Annotated[float, Field(gt=0.0, le=10.0)] = 1.0
    seconds: Annotated[float, Field(gt=0.0, le=600.0)] = 10.0
    width: Annotated[int, Field(ge=0, le=MAX_WIDTH)] = 640
    quality: Annotated[int, Field(ge=2, le=31)] = 5
    max_bytes: Annotated[int, Field(ge=65_536, le=1 << 30)] = 8 << 20  # per stream
    draw: bool = False

    @model_validator(mode="after")
    def _draw_needs_pillow(self) -> SnapshotsConfig:
        if self.draw and importlib.util.find_spec("PIL") is None:
            raise ValueError("draw: true needs Pillow (pip install 'streamer[avobjects]')")
        return self

    @property
    def frames(self) -> int:
        """How many JPEGs a stream's ring holds at most."""
        return max(1, round(self.seconds * self.fps))
