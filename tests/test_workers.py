"""``streamer run --workers N``: streams split over processes under one node; a worker
that dies is restarted; the supervisor owns ``available``."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import aiomqtt
from conftest import REPO, Mosquitto
from e2e_helpers import Traffic, check_predictions, collect, write_config
from media import make_clip

NODE = "multi"


class Logged:
    """A subprocess whose stderr lines are read as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._new = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip())
            self._new.set()

    async def line(self, pattern: str, seconds: float, after: int = 0) -> re.Match[str]:
        rx = re.compile(pattern)
        async with asyncio.timeout(seconds):
            i = after
            while True:
                while i < len(self.lines):
                    if m := rx.search(self.lines[i]):
                        return m
                    i += 1
                self._new.clear()
                await self._new.wait()

    async def wait(self, seconds: float) -> int:
        rc = await asyncio.wait_for(self.proc.wait(), seconds)
        await self._task
        return rc


async def _start(cfg: Path, workers: int) -> Logged:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streamer", "--log-level", "info", "run", str(cfg),
        "--workers", str(workers), cwd=REPO, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    return Logged(proc)


def _cfg(url: str, streams: list[dict[str, Any]]) -> dict[str, Any]:
    return {"node": NODE, "mqtt": {"url": url}, "streams": streams}


async def test_streams_split_over_workers_under_one_node(
    tmp_path: Path, mosquitto: Mosquitto, prediction_schema: dict[str, Any]
) -> None:
    clip = make_clip(tmp_path / "clip.mp4", 4.0, audio=True)
    streams = [{"id": f"f{i}", "video": f"file://{clip}", "audio": f"file://{clip}",
                "realtime": False} for i in range(3)]  # fmt: skip
    cfg = write_config(tmp_path / "cfg.yaml", _cfg(mosquitto.url, streams))
    traffic = Traffic()
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
        await client.subscribe(f"streamer/{NODE}/#", qos=1)
        collector = asyncio.create_task(collect(client, "streamer", NODE, traffic))
        run = await _start(cfg, 2)
        assert await run.wait(120) == 0, "\n".join(run.lines[-30:])
        await traffic.until(lambda t: t.stopped.is_set(), 30)
        collector.cancel()
    for s in ("f0", "f1", "f2"):
        check_predictions(traffic.predictions[s], prediction_schema, hop=0.5, length=2.0)
    runs = {s: traffic.predictions[s][0]["run"] for s in ("f0", "f1", "f2")}
    assert runs["f0"] == runs["f2"] != runs["f1"]  # streams[0::2] and streams[1::2]
    assert traffic.available == ["online", "stopped"]  # the supervisor's, once each
    assert {st.get("worker") for st in traffic.stats} <= {0, 1}
    assert sum("started (pid" in x for x in run.lines) == 2


async def test_a_worker_that_dies_is_restarted(tmp_path: Path, mosquitto: Mosquitto) -> None:
    streams = [{"id": f"s{i}", "video": f"synthetic:pattern?seed={i}&fps=10&size=160x120"}
               for i in range(2)]  # fmt: skip
    cfg = write_config(tmp_path / "cfg.yaml", _cfg(mosquitto.url, streams))
    traffic = Traffic()
    run = await _start(cfg, 2)
    try:
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
            collector = asyncio.create_task(collect(client, "streamer", NODE, traffic))
            m = await run.line(r"worker 1/2 started \(pid (\d+)\)", 60)
            await traffic.until(lambda t: bool(t.predictions["s1"]), 60)
            first_run = traffic.predictions["s1"][0]["run"]
            os.kill(int(m[1]), signal.SIGKILL)
            await run.line(r"worker 1/2 died \(exit -9\); restarting", 30)
            await traffic.until(
                lambda t: any(p["run"] != first_run for p in t.predictions["s1"]), 60
            )
            assert "offline" not in traffic.available  # the node itself never went away
            collector.cancel()
    finally:
        if run.proc.returncode is None:
            run.proc.send_signal(signal.SIGTERM)
    assert await run.wait(60) == 0, "\n".join(run.lines[-30:])
