"""The outbox on disk under faults: a closed terminal (SIGHUP), a SIGKILL during an
outage, and an ``outbox_dir`` that turns read-only or fills up.

Every run here is one broker outage from its start (nothing listens on the broker port)
until the test brings a real Mosquitto up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import free_port, require_root, require_tool, start_mosquitto, wait_port
from e2e_helpers import start_streamer, write_config
from reliability_helpers import DurableSubscriber, published

from streamer.sinks.spool import Spool

NODE = "spool"


def _config(broker_port: int, spool: Path, **extra: Any) -> dict[str, Any]:
    return {
        "node": NODE,
        "mqtt": {"url": f"mqtt://127.0.0.1:{broker_port}", "outbox_dir": str(spool)},
        "shutdown_timeout": 1,
        "streams": [
            {"id": "a", "video": "synthetic:pattern?fps=10&size=160x120",
             "audio": "synthetic:tone?freq=330", "text": []},
            {"id": "b", "video": "synthetic:pattern?seed=1&fps=10&size=160x120", "text": []},
        ],  # fmt: skip
        **extra,
    }


class LiveSeqs:
    """Every prediction as the node makes it, from its /events stream (the broker is
    down, so this is the only place to see them): stream -> [(seq, arrival time)]."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.seen: dict[str, list[tuple[int, float]]] = {"a": [], "b": []}
        self.run = ""
        self.changed = asyncio.Event()

    async def follow(self, stream: str) -> None:
        url = f"http://127.0.0.1:{self.port}/events/{stream}"
        async with aiohttp.ClientSession() as s, s.get(url) as r:
            async for line in r.content:
                if line.startswith(b"data:"):
                    p = json.loads(line[5:])
                    self.run = p["run"]
                    self.seen[stream].append((int(p["seq"]), time.monotonic()))
                    self.changed.set()

    async def until(self, n: int, seconds: float) -> None:
        async with asyncio.timeout(seconds):
            while min(len(v) for v in self.seen.values()) < n:
                self.changed.clear()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def following(port: int) -> AsyncIterator[LiveSeqs]:
    wait_port(port, 60)
    live = LiveSeqs(port)
    tasks = [asyncio.create_task(live.follow(s)) for s in live.seen]
    try:
        yield live
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_sighup_drains_like_sigterm(tmp_path: Path) -> None:
    """A closed terminal: the node drains, spools what the absent broker did not take
    and exits 0 (it used to die at once with 129, losing the outbox)."""
    http_port = free_port()
    cfg = write_config(
        tmp_path / "cfg.yaml",
        _config(free_port(), tmp_path / "spool", http={"listen": f"127.0.0.1:{http_port}"}),
    )
    log = tmp_path / "run.log"
    proc = await start_streamer(log, "run", str(cfg))
    async with following(http_port) as live:
        await live.until(3, 60)
    proc.send_signal(signal.SIGHUP)
    assert await asyncio.wait_for(proc.wait(), 60) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "predictions not delivered yet: spooled to" in text, text[-3000:]
    spool = Spool(tmp_path / "spool")
    spool.open()
    try:
        assert len(spool.load()) >= 6  # both streams' predictions are kept
    finally:
        spool.close()


async def test_a_sigkill_during_an_outage_loses_at_most_the_last_second(tmp_path: Path) -> None:
    port, http_port = free_port(), free_port()
    cfg = write_config(
        tmp_path / "cfg.yaml",
        _config(port, tmp_path / "spool", http={"listen": f"127.0.0.1:{http_port}"}),
    )
    log1 = tmp_path / "run1.log"
    proc = await start_streamer(log1, "run", str(cfg))
    async with following(http_port) as live:
        await live.until(12, 60)  # six seconds of windows, all in the outage
        proc.kill()
        killed = time.monotonic()
        await proc.wait()
    run1, made = live.run, {s: list(v) for s, v in live.seen.items()}
    # the broker comes back; a second run sends what the first had journaled, first
    broker_dir = tmp_path / "broker"
    broker_dir.mkdir()
    broker = start_mosquitto(broker_dir, port=port)
    sub = DurableSubscriber(port, f"streamer/{NODE}/+/prediction")
    sub_task = asyncio.create_task(sub.run())
    log2 = tmp_path / "run2.log"
    proc2 = None
    try:
        await asyncio.wait_for(sub.connected.wait(), 10)
        proc2 = await start_streamer(log2, "run", str(cfg))
        # everything made more than a second before the kill was on disk, and arrives
        old = {s: {q for q, t in v if t < killed - 1.0} for s, v in made.items()}
        assert all(len(v) >= 8 for v in old.values()), old
        await sub.until(lambda s: all(old[st] <= s.seqs[(run1, st)] for st in old), 60)
        lost = {st: sorted({q for q, _ in v} - sub.seqs[(run1, st)]) for st, v in made.items()}
        print(f"after a SIGKILL in an outage: lost {lost} (made in its last second)")
        await sub.until(lambda s: any(r != run1 for r, _ in s.seqs), 60)  # its own, too
        proc2.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc2.wait(), 60) == 0, log2.read_text()[-3000:]
        assert "spooled messages from" in log2.read_text()
        assert published(log2)
    finally:
        sub_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sub_task
        if proc2 is not None and proc2.returncode is None:
            proc2.kill()
            await proc2.wait()
        broker.stop()


def _can_mount() -> None:
    require_tool("unshare")
    require_tool("nsenter")
    require_root("a private mount namespace (unshare -m)")


@pytest.mark.parametrize("fault", ["read-only", "full"])
async def test_an_outbox_dir_that_fails_at_shutdown_is_one_line_with_the_count(
    tmp_path: Path, fault: str
) -> None:
    _can_mount()
    spool_dir, disk = tmp_path / "spool", tmp_path / "disk"
    spool_dir.mkdir()
    disk.mkdir()
    http_port = free_port()
    cfg = write_config(
        tmp_path / "cfg.yaml",
        _config(free_port(), spool_dir, http={"listen": f"127.0.0.1:{http_port}"}),
    )
    # the spool directory is a mount of the node's own: a bind mount of ``disk`` (covered
    # by a read-only one below), or a 32 KiB tmpfs that the outage's predictions fill
    mount = (f"mount --bind {disk} {spool_dir}" if fault == "read-only"
             else f"mount -t tmpfs -o size=32k tmpfs {spool_dir}")  # fmt: skip
    log = tmp_path / "run.log"
    with log.open("wb") as f:
        proc = await asyncio.create_subprocess_exec(
            shutil.which("unshare") or "unshare", "-m", "sh", "-c",
            f"{mount} && exec {sys.executable} -m streamer run {cfg}", stdout=f, stderr=f,
        )  # fmt: skip
    async with following(http_port) as live:
        if fault == "read-only":
            await live.until(6, 60)  # some of it journaled while the disk was writable
            # files open for writing keep a remount from going read-only: cover the
            # directory with a read-only mount of the same disk instead
            ro = await asyncio.create_subprocess_exec(
                "nsenter", "-t", str(proc.pid), "-m",
                "mount", "--bind", "-o", "ro", str(disk), str(spool_dir),
            )  # fmt: skip
            assert await ro.wait() == 0
            await live.until(10, 60)
        else:
            await live.until(24, 60)  # ~700 bytes each: past 32 KiB with SQLite's pages
    proc.send_signal(signal.SIGTERM)
    rc = await asyncio.wait_for(proc.wait(), 60)
    text = log.read_text()
    assert rc == 1, text[-3000:]  # the configured spool could not keep everything
    assert "Traceback" not in text and "OperationalError" not in text, text[-3000:]
    lines = [ln for ln in text.splitlines() if "could not spool" in ln]
    assert len(lines) == 1, text[-3000:]
    m = re.search(r"could not spool (\d+) .*: (\d+) were journaled .*, (\d+) are lost", lines[0])
    assert m, lines[0]
    undelivered, kept, lost = (int(g) for g in m.groups())
    assert undelivered == kept + lost and lost > 0, lines[0]
    if fault == "read-only":  # what the journal wrote before is still there, readable
        spool = Spool(disk)
        spool.open()
        try:
            assert len(spool.load()) >= kept > 0
        finally:
            spool.close()
