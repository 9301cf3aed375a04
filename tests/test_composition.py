"""The composition layer with fakes, in process: a node of scripted sources
(:class:`~streamer.testing.ListSource`), the shipped model and sinks that keep, fail or
stall (:class:`~streamer.testing.MemorySink`, :class:`~streamer.testing.GatedSink`), on
a fake clock; and a stream's reopen backoff with its waits on that clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest
from conftest import ended

from models.spec import ModelSpec
from streamer.app.node import Node
from streamer.app.stream import StreamPipeline
from streamer.backoff import Backoff
from streamer.config import Config, ModelConfig, StreamConfig, WindowConfig, parse_config
from streamer.errors import SourceOpenError
from streamer.frames import NS, Modality, VideoFrame, Window
from streamer.inference.model import LoadedModel, load_model
from streamer.predictions import Prediction
from streamer.sinks.base import Event, Sink, Status, StreamState
from streamer.sources.base import Source
from streamer.stats import StreamStats
from streamer.testing import FakeClock, GatedSink, ListSource, MemorySink, failing_session

SPEC = ModelSpec()
T0 = FakeClock().now_ns()
STEP = NS // SPEC.fps


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    return load_model(ModelConfig(threads=1), WindowConfig())


def frames(stream: str, start_s: float, seconds: float) -> list[VideoFrame]:
    n = round(seconds * SPEC.fps)
    first = T0 + round(start_s * NS)
    image = np.zeros((SPEC.image_size, SPEC.image_size, 3), np.uint8)
    return [VideoFrame(stream, first + i * STEP, image) for i in range(n)]


def config(*streams: str, shutdown_timeout: float = 5.0) -> Config:
    return parse_config({
        "node": "n1",
        "mqtt": {"url": "mqtt://127.0.0.1:1", "stats_interval": 3600},
        "window": {"length": 2.0, "hop": 0.5, "max_delay": 0.5},
        "streams": [{"id": s, "video": "synthetic:avdigits", "text": []} for s in streams],
        "shutdown_timeout": shutdown_timeout,
    })  # fmt: skip


def node(
    cfg: Config, loaded: LoadedModel, sources: dict[str, ListSource], sinks: list[Sink]
) -> Node:
    def open_sources(s: StreamConfig) -> list[Source]:
        return [sources[s.id]]

    return Node(cfg, clock=FakeClock(), loaded=loaded, sinks=sinks, sources=open_sources)


def of(stream: str, events: list[Event]) -> list[Prediction]:
    return [e for e in events if isinstance(e, Prediction) and e.stream == stream]


def stopped(stream: str) -> Callable[[list[Event]], bool]:
    return lambda events: StreamState(stream, "stopped") in events


# 4 s of frames: every 2 s window every 0.5 s that holds one, the last ones at the end
WINDOWS_4S = 11


async def test_a_stream_that_ends_while_the_others_go_on(loaded: LoadedModel) -> None:
    silent = asyncio.Event()  # b goes quiet after its first second, until a has ended
    sources = {
        "a": ListSource(frames("a", 0, 4)),
        "b": ListSource([*frames("b", 0, 1), silent, *frames("b", 1, 3)]),
    }
    sink = MemorySink()
    n = node(config("a", "b"), loaded, sources, [sink])
    run = asyncio.create_task(n.run())
    await asyncio.wait_for(sink.wait_for(stopped("a")), 30)
    ended_at = len(sink.events)
    assert StreamState("b", "online") in sink.events and not stopped("b")(sink.events)
    silent.set()
    assert await ended(run, 30) == 0
    a, b = of("a", sink.events), of("b", sink.events)
    assert [p.seq for p in a] == list(range(WINDOWS_4S))
    assert [p.seq for p in b] == list(range(WINDOWS_4S))
    assert len(of("b", sink.events[ended_at:])) >= WINDOWS_4S - 2  # b went on after a ended
    assert Status("a", "video", False) in sink.events[:ended_at]
    assert n.loaded.spec == SPEC and n.published == 2 * WINDOWS_4S


async def test_a_sink_that_raises_costs_only_itself(loaded: LoadedModel) -> None:
    broken, good = MemorySink("broken", fail=True), MemorySink("good")
    sources = {"a": ListSource(frames("a", 0, 4))}
    n = node(config("a"), loaded, sources, [broken, good])
    assert await asyncio.wait_for(n.run(), 30) == 0
    assert [p.seq for p in good.predictions] == list(range(WINDOWS_4S))
    assert broken.events == [] and n.sinks.errors["broken"] == len(good.events)
    counters = n.snapshot()["sinks"]
    assert counters["broken"]["errors"] == len(good.events) and counters["good"]["errors"] == 0


async def test_a_slow_sink_drops_its_oldest_and_holds_up_nothing(loaded: LoadedModel) -> None:
    slow, good = GatedSink(buffer=2), MemorySink("good")
    sources = {"a": ListSource(frames("a", 0, 4))}
    n = node(config("a", shutdown_timeout=0.2), loaded, sources, [slow, good])
    assert await asyncio.wait_for(n.run(), 30) == 0  # the drain gave up on it after 0.2 s
    assert [p.seq for p in good.predictions] == list(range(WINDOWS_4S))
    assert slow.written == []  # its disk never answered
    # what overflowed its buffer and what was still in it at the exit: all counted
    assert slow.dropped == WINDOWS_4S and slow.pending == 0
    assert n.snapshot()["sinks"]["gated"]["dropped"] == WINDOWS_4S


async def test_stop_flushes_the_windows_and_drains_the_sinks(loaded: LoadedModel) -> None:
    never = asyncio.Event()  # the camera goes silent after 3 s and stays so
    sources = {"a": ListSource([*frames("a", 0, 3), never], live=True)}
    slow, memory = GatedSink(buffer=100), MemorySink()
    n = node(config("a"), loaded, sources, [slow, memory])
    run = asyncio.create_task(n.run())
    await asyncio.wait_for(memory.wait_for(lambda ev: len(of("a", ev)) >= 2), 30)
    n.stop()
    slow.gate.set()  # the slow sink gets going only now: the drain waits for it
    assert await ended(run, 30) == 0
    got = of("a", memory.events)
    assert [p.seq for p in got] == list(range(len(got)))
    assert slow.written == got  # everything published reached the slow sink, in order
    assert got[-1].partial  # the window still open at the stop was cut and sent
    assert sources["a"].closed.is_set()
    assert StreamState("a", "stopped") in memory.events


class Runner:
    """Stands in for the inference runner: keeps the windows."""

    def __init__(self) -> None:
        self.windows: list[Window] = []
        self.forgotten: list[str] = []

    def submit_nowait(self, window: Window) -> None:
        self.windows.append(window)

    async def submit(self, window: Window) -> None:
        self.submit_nowait(window)

    def forget(self, stream: str) -> None:
        self.forgotten.append(stream)


async def test_a_failing_source_reopens_with_backoff_on_a_fake_clock() -> None:
    clock = FakeClock()
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:  # the wait passes on the fake clock
        waits.append(round(seconds, 6))
        clock.advance(seconds)

    src = ListSource(
        failing_session(*frames("a", 0, 1)),
        SourceOpenError("list:", "refused"),
        SourceOpenError("list:", "refused"),
        failing_session(*frames("a", 1, 1)),
        frames("a", 2, 2),
        live=True,
    )
    statuses: list[tuple[Modality, bool]] = []
    runner = Runner()
    stats = StreamStats()
    w = StreamPipeline(
        StreamConfig(id="a", video="synthetic:avdigits"),
        window=WindowConfig(length=2.0, hop=0.5, max_delay=0.5),
        spec=SPEC, clock=clock, sources=[src], runner=runner,  # type: ignore[arg-type]
        stats=stats, status=lambda _s, m, up: statuses.append((m, up)),
        backoff=lambda: Backoff(base=0.2, cap=2.0, rng=lambda: 1.0, sleep=fake_sleep),
    )  # fmt: skip
    await asyncio.wait_for(w.run(), 10)
    assert src.opens == 5 and stats.errors == 4
    # doubling while it fails; back to the base once a session held
    assert waits == [0.2, 0.4, 0.8, 0.2]
    assert statuses == [("video", True), ("video", False)] * 3
    assert sum(stats.frames_in.values()) == 16  # every frame of every session
    assert runner.forgotten == ["a"]
    starts = [w.start_ns for w in runner.windows]
    assert starts == sorted(starts) and starts[0] == T0 - NS // 2 * 3, starts

