"""The ``sinks:`` section of the config: sinks beside MQTT (which is always on)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

FsyncPolicy = Literal["batch", "rotate", "never"]


class FileSinkConfig(BaseModel):
    """Predictions as JSON lines in a rotating file (:mod:`streamer.sinks.file`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path
    # a file is rotated before a line would take it past this size
    max_bytes: Annotated[int, Field(ge=4096, le=1 << 40)] = 10 * 1024 * 1024
    # files kept: the current one and max_files - 1 rotated ones (path.1 the newest)
    max_files: Annotated[int, Field(ge=1, le=1000)] = 5
    # batch: fsync after every write; rotate: only when a file is closed; never: the OS's
    fsync: FsyncPolicy = "batch"
    # predictions waiting for the disk; past it the oldest are dropped (counted)
    buffer: Annotated[int, Field(ge=1, le=1_000_000)] = 1024

    @field_validator("path")
    @classmethod
    def _path(cls, v: Path) -> Path:
        if v.exists() and not v.is_file():
            raise ValueError(f"not a regular file: {v}")
        if not v.parent.is_dir():
            raise ValueError(f"no such directory: {v.parent}")
        return v


class SinksConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    file: FileSinkConfig | None = None
