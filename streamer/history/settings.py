"""The ``history:`` section of the config: where the event history lives and how much of
it is kept. It applies when ``events:`` is configured (without it there are no events).

``dir`` absent: an in-memory database (the same API and limits, lost at exit); present:
``<dir>/events.sqlite3``, created with its parents, locked against a second process.
Events whose ``start`` is older than ``max_age_days``, or the oldest beyond
``max_bytes`` (the events' JSON plus their JPEG snapshots), are removed and counted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

MIB = 1024 * 1024


class HistoryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dir: Path | None = None
    max_age_days: Annotated[float, Field(gt=0, le=3650)] = 30.0
    max_bytes: Annotated[int, Field(ge=MIB, le=1024**4)] = 1024 * MIB

    @field_validator("dir")
    @classmethod
    def _dir(cls, v: Path | None) -> Path | None:
        if v is not None and v.exists() and not v.is_dir():
            raise ValueError(f"not a directory: {v}")
        return v
