"""Helpers for end-to-end tests: run ``streamer`` as a subprocess, collect MQTT traffic."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import jsonschema
import yaml


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


@dataclass
class Traffic:
    predictions: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    retained_last: dict[str, str] = field(default_factory=dict)  # topic -> last payload
    stats: list[dict[str, Any]] = field(default_factory=list)
    available: list[str] = field(default_factory=list)
    online: asyncio.Event = field(default_factory=asyncio.Event)
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # set on every message

    async def until(self, predicate: Callable[[Traffic], bool], seconds: float) -> None:
        """Wait, message by message, until ``predicate(self)`` holds."""
        async with asyncio.timeout(seconds):
            while not predicate(self):
                self.changed.clear()
                await self.changed.wait()


async def collect(client: aiomqtt.Client, prefix: str, node: str, traffic: Traffic) -> None:
    """Record everything under the node (and HA discovery) until the connection ends."""
    try:
        await _collect(client, prefix, node, traffic)
    except aiomqtt.MqttError:
        pass  # the broker went away (an embedded one ends with the process)


async def _collect(client: aiomqtt.Client, prefix: str, node: str, traffic: Traffic) -> None:
    await client.subscribe(f"{prefix}/{node}/#", qos=1)
    await client.subscribe("homeassistant/#", qos=1)
    async for msg in client.messages:
        traffic.changed.set()
        topic = str(msg.topic)
        payload = bytes(msg.payload)  # type: ignore[arg-type]
        if topic.endswith("/prediction"):
            p = json.loads(payload)
            traffic.predictions[p["stream"]].append(p)
        elif topic == f"{prefix}/{node}/stats":
            traffic.stats.append(json.loads(payload))
        else:
            traffic.retained_last[topic] = payload.decode(errors="replace")
            if topic == f"{prefix}/{node}/available":
                traffic.available.append(payload.decode())
                if payload == b"online":
                    traffic.online.set()
                elif payload == b"stopped":
                    traffic.stopped.set()


async def start_streamer(log: Path, *args: str) -> asyncio.subprocess.Process:
    """``python -m streamer ARGS`` with stdout and stderr to ``log`` (no pipe to fill)."""
    with log.open("wb") as f:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "streamer", *args, stdout=f, stderr=f
        )


def check_predictions(
    preds: list[dict[str, Any]], schema: dict[str, Any], *, hop: float, length: float
) -> None:
    """Schema-valid, one run, seq 0..n-1 without gaps, hop-aligned starts, in order."""
    assert preds, "no predictions"
    for p in preds:
        jsonschema.validate(p, schema)
    assert len({p["run"] for p in preds}) == 1
    assert [p["seq"] for p in preds] == list(range(len(preds)))
    starts = [p["window"]["start"] for p in preds]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    for p in preds:
        s, e = p["window"]["start"], p["window"]["end"]
        assert abs(s / hop - round(s / hop)) < 1e-6, s
        assert abs((e - s) - length) < 1e-6


@dataclass
class RunningNode:
    proc: asyncio.subprocess.Process
    traffic: Traffic
    log: Path
    rc: int | None = None  # set once it has exited


@contextlib.asynccontextmanager
async def run_node(
    tmp: Path, cfg: dict[str, Any], broker_port: int, *, stop_timeout: float = 30.0
) -> AsyncIterator[RunningNode]:
    """``streamer run`` on ``cfg`` with its traffic collected from the broker; SIGTERM on
    the way out (unless it ended by itself). Check ``rc`` after the block."""
    path = write_config(tmp / "cfg.yaml", cfg)
    log = tmp / "streamer.log"
    run = RunningNode(await start_streamer(log, "run", str(path)), Traffic(), log)
    try:
        async with aiomqtt.Client("127.0.0.1", broker_port) as client:
            collector = asyncio.create_task(collect(client, "streamer", cfg["node"], run.traffic))
            try:
                yield run
            finally:
                collector.cancel()
    finally:
        if run.proc.returncode is None:
            run.proc.send_signal(signal.SIGTERM)
        run.rc = await asyncio.wait_for(run.proc.wait(), stop_timeout)
