"""The ``ray:`` section of the config: how ``streamer run --engine ray`` shares the work.

Read only under ``--engine ray``; a node run without Ray ignores it. Streams are packed
into shards of ``streams_per_shard`` (each shard is one Ray actor, a process of about
130 MiB: never one per camera); the model runs in ``runners`` runner actors that batch
the windows of every shard.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

HOST_LABEL = "streamer.io/host"  # the Ray node label a stream's ``host:`` names
# what Ray allows in a label value: alphanumerics, '-', '_', '.', at most 63 characters
LABEL_VALUE_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")


def check_host(value: str) -> str:
    if not LABEL_VALUE_RE.match(value):
        raise ValueError(
            f"{value!r} is not a Ray label value (letters, digits, '-', '_', '.'; 63 at most)"
        )
    return value


class RayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    streams_per_shard: Annotated[int, Field(ge=1, le=1024)] = 8
    runners: Annotated[int, Field(ge=1, le=1024)] = 1  # runner actors (the model, batching)
    runner_gpus: Annotated[float, Field(ge=0, le=64)] = 0.0  # per runner: 1 = one per GPU
    runner_cpus: Annotated[float, Field(ge=0, le=1024)] = 1.0
    runner_host: str | None = None  # pin the runners to this streamer.io/host label
    shard_cpus: Annotated[float, Field(ge=0, le=1024)] = 1.0  # Ray's CPUs a shard reserves
    check_interval: Annotated[float, Field(gt=0, le=60)] = 1.0  # shards' health and placement

    @field_validator("runner_host")
    @classmethod
    def _host(cls, v: str | None) -> str | None:
        return None if v is None else check_host(v)
