"""Capture processes (streamer.capture): the same items as the thread, crash isolation.

Real media made by PyAV; a real child process killed (SIGKILL) and stopped (SIGSTOP).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from media import make_clip

from models.spec import ModelSpec
from streamer.capture.process import ProcessSource
from streamer.capture.ring import AUDIO, VIDEO, ShmRing
from streamer.config import Config
from streamer.errors import SourceEnded, SourceError
from streamer.frames import AudioChunk, Item, VideoFrame
from streamer.snapshots.ring import SnapshotRing
from streamer.sources.av import AVSource
from streamer.sources.base import Source
from streamer.sources.factory import open_sources

SPEC = ModelSpec()


def shm_names() -> set[str]:
    return set(os.listdir("/dev/shm"))


async def drain(src: Source) -> list[Item]:
    await src.open()
    items: list[Item] = []
    try:
        while True:
            items.append(await src.recv())
    except SourceEnded:
        pass
    finally:
        await src.close()
    return items


def test_ring_drops_oldest_and_counts() -> None:
    before = shm_names()
    ring = ShmRing.create(4, 64)
    try:
        for i in range(10):
            ring.write(AUDIO, i, 2, np.array([i, -i], np.float32))
        got = []
        while (slot := ring.read()) is not None:
            got.append(slot[1])
        # slots 4: the producer's next slot is never read; 10 - 3 kept = 7 dropped
        assert got == [7, 8, 9]
        assert ring.dropped == 7
        ring.write(VIDEO, 42, 2, np.arange(12, dtype=np.uint8).reshape(2, 2, 3))
        kind, pts, data = ring.read() or (0, 0, None)
        assert (kind, pts) == (VIDEO, 42)
        assert data is not None and data.shape == (2, 2, 3) and int(data[1, 1, 2]) == 11
        with pytest.raises(ValueError):
            ring.write(AUDIO, 0, 17, np.zeros(17, np.float32))
    finally:
        ring.close()
    assert shm_names() == before


def test_process_items_equal_thread_items(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "a.mp4", 2.0, size=(160, 120), fps=10)
    url = f"file://{clip}"
    before = shm_names()

    async def both() -> tuple[list[Item], list[Item]]:
        # every frame: which frame wins a slot depends on where the open put time 0
        kw = dict(video=True, audio=True, spec=SPEC, realtime=False)
        proc = await drain(ProcessSource(url, **kw))  # type: ignore[arg-type]
        thread = await drain(AVSource(url, **kw))  # type: ignore[arg-type]
        return proc, thread

    proc, thread = asyncio.run(both())
    assert len(proc) == len(thread) > 10
    t0p, t0t = proc[0].pts_ns, thread[0].pts_ns  # each open has its own base
    for a, b in zip(proc, thread, strict=True):
        assert type(a) is type(b)
        assert a.pts_ns - t0p == b.pts_ns - t0t
        if isinstance(a, VideoFrame) and isinstance(b, VideoFrame):
            assert np.array_equal(a.image, b.image)
        elif isinstance(a, AudioChunk) and isinstance(b, AudioChunk):
            assert np.array_equal(a.samples, b.samples)
    assert shm_names() == before


def test_process_snapshots_equal_thread_snapshots(tmp_path: Path) -> None:
    """The child encodes the stream's snapshots at the source's size and cadence; the
    node's ring holds the same JPEGs, counted, as a thread source's would."""
    clip = make_clip(tmp_path / "a.mp4", 3.0, size=(320, 240), fps=10, audio=False)
    url = f"file://{clip}"

    def ring() -> SnapshotRing:
        # one a frame (10 fps): which frame wins a slower slot depends on the open's base
        return SnapshotRing("a", fps=10.0, frames=100, width=0, quality=5, max_bytes=1 << 24)

    async def both() -> tuple[SnapshotRing, SnapshotRing]:
        kw = dict(video=True, audio=False, spec=SPEC, realtime=False)
        in_proc, in_thread = ring(), ring()
        await drain(ProcessSource(url, snapshots=in_proc, **kw))  # type: ignore[arg-type]
        await drain(AVSource(url, snapshot=in_thread.offer, **kw))  # type: ignore[arg-type]
        return in_proc, in_thread

    proc, thread = asyncio.run(both())
    got, want = proc.items(), thread.items()
    assert len(got) == len(want) == 30  # 3 s at 10 fps, every frame encoded
    for a, b in zip(got, want, strict=True):
        assert (a.width, a.height) == (b.width, b.height) == (320, 240)
        assert a.jpeg == b.jpeg  # the same frame, the same encoder settings
        assert a.pts_ns - got[0].pts_ns == b.pts_ns - want[0].pts_ns
    counted = proc.counters()
    assert counted["taken"] == len(got) and counted["failed"] == 0
    assert counted["encoded_bytes"] == sum(len(a.jpeg) for a in got) > 0


def test_config_capture_per_node_and_stream(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "a.mp4", 0.5, size=(64, 48), fps=10, audio=False)
    cfg = Config.model_validate(
        {"capture": "process", "streams": [
            {"id": "a", "video": f"file://{clip}"},
            {"id": "b", "video": f"file://{clip}", "capture": "thread"},
        ]}
    )  # fmt: skip
    (a,) = open_sources(cfg.streams[0], spec=SPEC, capture=cfg.capture)
    (b,) = open_sources(cfg.streams[1], spec=SPEC, capture=cfg.capture)
    assert isinstance(a, ProcessSource) and isinstance(b, AVSource)
    with pytest.raises(ValueError, match="capture"):
        Config.model_validate({"capture": "fork", "streams": [{"id": "a", "video": "file:///x"}]})


async def _recv_within(src: ProcessSource, seconds: float) -> Item:
    return await asyncio.wait_for(src.recv(), seconds)


async def _reopen_until_item(src: ProcessSource, deadline: float) -> Item:
    """What the pipeline does: close, reopen (backoff aside), read."""
    await src.close()
    await src.open()
    return await _recv_within(src, max(0.1, deadline - time.monotonic()))


@pytest.mark.parametrize("how", ["kill", "stop"])
def test_dead_or_stalled_child_raises_and_reopens(tmp_path: Path, how: str) -> None:
    clip = make_clip(tmp_path / "a.mp4", 2.0, size=(160, 120), fps=10)
    before = shm_names()

    async def scenario() -> None:
        src = ProcessSource(
            f"file://{clip}", video=True, audio=True, spec=SPEC, realtime=True, loop=True,
            watchdog_s=1.5,
        )  # fmt: skip
        await src.open()
        try:
            await _recv_within(src, 10)
            pid = src.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL if how == "kill" else signal.SIGSTOP)
            t0 = time.monotonic()
            with pytest.raises(
                SourceError, match="killed by SIGKILL" if how == "kill" else "stalled"
            ):
                while True:  # the items it wrote before, then the error
                    await _recv_within(src, 10)
            assert src.restarts == 1
            item = await _reopen_until_item(src, t0 + 5.0 + (1.5 if how == "stop" else 0))
            assert item.pts_ns > 0 and src.pid != pid
            assert time.monotonic() - t0 < 5.0 + (1.5 if how == "stop" else 0)
        finally:
            await src.close()

    asyncio.run(scenario())
    assert shm_names() == before


def test_open_error_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    before = shm_names()
    src = ProcessSource(f"file://{tmp_path}/none.mp4", video=True, audio=False, spec=SPEC)
    with pytest.raises(SourceError, match="no such file"):
        asyncio.run(src.open())
    assert shm_names() == before


def test_a_cancel_that_meets_a_wake_is_not_lost() -> None:
    """A stop cancels a reader the moment an item wakes it: the reader must end
    (Python 3.11's wait_for returned normally there, and a node hung at its stop)."""

    async def scenario() -> None:
        src = ProcessSource("file:///x.mp4", video=True, audio=False, spec=SPEC)
        src._loop = asyncio.get_running_loop()
        waiting = asyncio.create_task(src._wait(30.0))
        await asyncio.sleep(0)  # one loop turn: it waits now
        src._set()  # an item's wake ...
        waiting.cancel()  # ... and the stop, in the same turn
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(scenario())


FIRST_START = """
import asyncio, json, logging, sys, threading
from multiprocessing import forkserver
from models.spec import ModelSpec
from streamer.capture.process import ProcessSource

on_loop = []  # per start that asks the fork server: was it on the loop's thread?
ask = forkserver.connect_to_new_process
def asked(fds):
    on_loop.append(threading.current_thread() is threading.main_thread())
    return ask(fds)
forkserver.connect_to_new_process = asked
steps = []  # asyncio debug: the open's steps that held the loop over 0.1 s
class Slow(logging.Handler):
    def emit(self, r):
        if "name='opener'" in r.getMessage():
            steps.append(r.getMessage().rsplit("took ", 1)[-1])
logging.getLogger("asyncio").addHandler(Slow())

async def main():
    asyncio.get_running_loop().slow_callback_duration = 0.1
    src = ProcessSource(sys.argv[1], video=True, audio=False, spec=ModelSpec())
    await asyncio.create_task(src.open(), name="opener")
    await src.close()
asyncio.run(main(), debug=True)
print(json.dumps({"on_loop": on_loop, "slow_steps": steps}))
"""


def test_the_fork_servers_first_answer_is_not_awaited_on_the_event_loop(tmp_path: Path) -> None:
    """The fork server answers its first start only once it has imported PRELOAD
    (~0.4 s idle, seconds on a busy machine). That first start is a do-nothing child in
    a thread, so the capture process's start on the loop (where every start must be)
    finds it ready. In a fresh interpreter, as a node's first open is."""
    clip = make_clip(tmp_path / "a.mp4", 1.0, size=(160, 120), fps=10, audio=False)
    out = subprocess.run(
        [sys.executable, "-c", FIRST_START, f"file://{clip}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"fork server asked from the loop's thread: {got['on_loop']}; open steps that "
          f"held the loop over 0.1 s: {got['slow_steps']}")  # fmt: skip
    assert got["on_loop"] == [False, True], got
