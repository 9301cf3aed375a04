"""A real multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``, as Ray's
own tests use), with token authentication and fast failure detection, and the streamer
controller run against it as a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from conftest import IN_CI, REPO

HOST = "streamer.io/host"
# Ray's defaults take ~15 s to declare a node dead; these take 3-4 s (RECIPES.md)
FAST_FAILURE = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}


def require_ray() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        if IN_CI:
            pytest.fail("ray is not installed (CI installs streamer[ray] in .ci/run)")
        pytest.skip("ray is not installed here: pip install 'streamer[ray]' (skipped outside CI)")


@contextmanager
def ray_cluster(monkeypatch: pytest.MonkeyPatch, head_cpus: float = 1) -> Iterator[Any]:
    """A head labelled ``head``, token auth on (conftest puts the mode and a token in
    this process's environment, so the controller it starts inherits them); every node
    it added is shut down after."""
    from ray.cluster_utils import Cluster

    assert os.environ["RAY_AUTH_MODE"] == "token"
    cluster = Cluster(
        initialize_head=True,
        connect=False,
        head_node_args={
            "num_cpus": head_cpus,
            "include_dashboard": False,
            "labels": {HOST: "head"},
            "_system_config": FAST_FAILURE,
        },
    )
    try:
        yield cluster
    finally:
        cluster.shutdown()


def kill_raylet(node: Any) -> int:
    """SIGKILL the node's raylet, as a machine that dies; its workers follow it."""
    pid: int = node.all_processes["raylet"][0].process.pid
    os.kill(pid, signal.SIGKILL)
    return pid


@dataclass
class Seen:
    """What a persistent subscriber got under ``P/N``."""

    predictions: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    raw: dict[tuple[str, str, int], set[bytes]] = field(default_factory=lambda: defaultdict(set))
    gaps: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    shards: dict[str, Any] = field(default_factory=dict)
    available: list[str] = field(default_factory=list)
    stats: dict[int, dict[str, Any]] = field(default_factory=dict)  # the latest, per shard
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def take(self, topic: str, payload: bytes, base: str) -> None:
        if topic.endswith("/prediction"):
            p = json.loads(payload)
            self.predictions[p["stream"]].append(p)
            self.raw[(p["run"], p["stream"], p["seq"])].add(payload)
        elif topic.endswith("/gap"):
            g = json.loads(payload)
            self.gaps[g["stream"]].append(g)
        elif topic == f"{base}/shards":
            self.shards = json.loads(payload)
        elif topic == f"{base}/stats":
            st = json.loads(payload)
            self.stats[st["shard"]] = st
        elif topic == f"{base}/available":
            self.available.append(payload.decode())
        self.changed.set()

    async def until(self, what: str, pred: Any, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                while not pred():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(f"not within {seconds} s: {what}; shards: {self.shards}") from None

    def runs(self, stream: str) -> list[str]:
        out: list[str] = []
        for p in self.predictions[stream]:
            if p["run"] not in out:
                out.append(p["run"])
        return out

    def shard_of(self, stream: str) -> dict[str, Any]:
        return next(s for s in self.shards.get("shards", []) if stream in s["streams"])


async def subscribe(client: aiomqtt.Client, seen: Seen, base: str) -> None:
    await client.subscribe(f"{base}/#", qos=1)
    async for m in client.messages:
        seen.take(str(m.topic), bytes(m.payload), base)  # type: ignore[arg-type]


@dataclass
class Controller:
    proc: asyncio.subprocess.Process
    log: Path
    rc: int | None = None  # set once it has exited

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@contextlib.asynccontextmanager
async def controller_running(
    cfg: Path, address: str, broker_port: int, base: str, seen: Seen, log: Path
) -> AsyncIterator[Controller]:
    """``streamer run cfg --engine ray`` with a persistent QoS 1 subscriber on ``base``
    feeding ``seen`` from before its start; SIGTERM on the way out, then its ``rc`` (and,
    when 0, its ``stopped``)."""
    async with aiomqtt.Client("127.0.0.1", broker_port, identifier=f"accountant-{log.stem}",
                              clean_session=False) as client:  # fmt: skip
        sub = asyncio.create_task(subscribe(client, seen, base))
        with log.open("wb") as f:  # the child holds its own descriptor
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "streamer", "--log-level", "info", "run", str(cfg),
                "--engine", "ray", "--address", address, cwd=REPO,
                stdout=asyncio.subprocess.DEVNULL, stderr=f,
            )  # fmt: skip
        c = Controller(proc, log)
        try:
            yield c
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            c.rc = await asyncio.wait_for(proc.wait(), 90)
            if c.rc == 0:
                await seen.until("available stopped", lambda: "stopped" in seen.available, 20)
            sub.cancel()
