"""Where the streams go: shards of streams, pinned to a host or free to move.

A stream bound to a device of its machine (``v4l2:``, ``mic:``) must name that machine
(``host:``, matched against the Ray node label ``streamer.io/host``); any stream that
names a host is pinned there and waits for it when it is gone. The others go anywhere
and move when their node dies. Streams are packed into shards in config order, a host's
streams apart from the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamer.config import Config, StreamConfig
from streamer.errors import ConfigError

DEVICE_SCHEMES = ("v4l2:", "mic:")


@dataclass(frozen=True, slots=True)
class ShardPlan:
    index: int
    streams: tuple[str, ...]
    host: str | None  # the streamer.io/host label it must run on; None: anywhere

    @property
    def name(self) -> str:
        return f"shard{self.index}"


def device_bound(s: StreamConfig) -> bool:
    return any(u is not None and u.startswith(DEVICE_SCHEMES) for u in (s.video, s.audio))


def check_cluster_config(cfg: Config) -> None:
    """What ``--engine ray`` cannot run: exit 2, naming the field."""
    for i, s in enumerate(cfg.streams):
        if device_bound(s) and s.host is None:
            raise ConfigError(
                f"streams[{i}].host",
                "a v4l2:/mic: stream reads a device of one machine: name it (host: NAME, "
                "the Ray node started with --labels streamer.io/host=NAME)",
            )
        if "webrtc" in (s.video, s.audio):
            raise ConfigError(f"streams[{i}]", "webrtc streams need http:, which --engine ray "
                              "serves from the controller (/metrics) only")  # fmt: skip
    if cfg.mqtt.embedded:
        raise ConfigError("mqtt.url", "--engine ray needs a broker every node can reach, "
                          "not the embedded one (mqtt://...)")  # fmt: skip


def plan_shards(cfg: Config) -> list[ShardPlan]:
    """The shards, each at most ``ray.streams_per_shard`` streams of one host (or none)."""
    size = cfg.ray.streams_per_shard
    groups: dict[str | None, list[str]] = {}
    for s in cfg.streams:
        groups.setdefault(s.host, []).append(s.id)
    plans: list[ShardPlan] = []
    for host, ids in groups.items():
        for k in range(0, len(ids), size):
            plans.append(ShardPlan(len(plans), tuple(ids[k : k + size]), host))
    return plans
