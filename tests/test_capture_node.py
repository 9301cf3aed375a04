"""A node with ``capture: process``: a capture process killed (SIGKILL) costs its own
stream a few seconds and no other stream anything.

Two live streams (realtime looping files, video and audio) decode in their own capture
processes; one is killed. Its video goes offline and comes back within 5 s, and windows
with new video follow; the other stream's ``seq`` has no gap, every one of its windows
has its video, and nothing of it is dropped. Every wait is on the sink, bounded.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Mosquitto, ended
from media import make_clip

from streamer.app.node import Node
from streamer.capture.process import ProcessSource
from streamer.config import ModelConfig, WindowConfig, parse_config
from streamer.inference.model import LoadedModel, load_model
from streamer.predictions import Prediction
from streamer.sinks.base import Event, Status
from streamer.testing import MemorySink


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    return load_model(ModelConfig(threads=1), WindowConfig())


def preds(events: list[Event], stream: str) -> list[Prediction]:
    return [e for e in events if isinstance(e, Prediction) and e.stream == stream]


def status_at(events: list[Event], stream: str, online: bool, after: int) -> int | None:
    """The index of the first video status of ``stream`` at ``online`` from ``after`` on."""
    return next(
        (i for i, e in enumerate(events) if i >= after and isinstance(e, Status)
         and (e.stream, e.modality, e.online) == (stream, "video", online)),
        None,
    )  # fmt: skip


async def until(sink: MemorySink, predicate: Callable[[list[Event]], bool], seconds: float) -> None:
    await asyncio.wait_for(sink.wait_for(predicate), seconds)


async def test_a_killed_capture_process_costs_only_its_own_stream(
    tmp_path: Path, mosquitto: Mosquitto, loaded: LoadedModel
) -> None:
    clip = make_clip(tmp_path / "a.mp4", 4.0, size=(160, 120), fps=10, audio=True)
    url = f"file://{clip}"
    cfg = parse_config({
        "node": "cap", "mqtt": {"url": mosquitto.url, "stats_interval": 60.0},
        "capture": "process",
        "streams": [{"id": s, "video": url, "audio": url, "loop": True, "text": []}
                    for s in ("a", "b")],
    })  # fmt: skip
    sink = MemorySink()
    node = Node(cfg, loaded=loaded, sinks=[sink])
    task = asyncio.create_task(node.run())
    try:
        await until(sink, lambda ev: len(preds(ev, "a")) >= 4 and len(preds(ev, "b")) >= 4, 60)
        src = node.streams_by_id["a"].sources[0]
        assert isinstance(src, ProcessSource) and src.pid is not None
        mark = len(sink.events)
        killed_at, t0 = time.time(), time.monotonic()
        os.kill(src.pid, signal.SIGKILL)
        await until(sink, lambda ev: status_at(ev, "a", False, mark) is not None, 10)
        off = status_at(sink.events, "a", False, mark)
        assert off is not None
        await until(sink, lambda ev: status_at(ev, "a", True, off) is not None, 10)
        back_s = time.monotonic() - t0
        fresh = lambda ev: [p for p in preds(ev, "a") if p.present[0] and p.start_s > killed_at]  # noqa: E731
        await until(sink, lambda ev: bool(fresh(ev)), 15)
        fresh_s = time.monotonic() - t0
        n_b = len(preds(sink.events, "b"))
        await until(sink, lambda ev: len(preds(ev, "b")) >= n_b + 2, 10)  # b went on
    finally:
        node.stop()
        assert await ended(task, 60) == 0
    print(f"capture process killed: video online again {back_s:.2f} s later, a window of "
          f"new video {fresh_s:.2f} s later")  # fmt: skip
    assert back_s < 5.0
    b = preds(sink.events, "b")
    assert [p.seq for p in b] == list(range(len(b)))  # no gap
    assert all(p.present[0] for p in b[1:-2]), [p.present for p in b]  # its video, throughout
    assert node.builder.skipped("b") == 0
    assert sum(node.stats["b"].dropped.values()) == 0, node.stats["b"].dropped
    assert src.restarts == 1
