"""One source shape: the declared fast path, the shared drop-oldest queue, text as a
Source (and what the worker makes of it), WebRTC conversion off the event loop."""

from __future__ import annotations

import asyncio
import threading
from fractions import Fraction
from typing import Any

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

import streamer.sources.webrtc as webrtc
from models.spec import ModelSpec
from streamer.app.stream import StreamPipeline
from streamer.backoff import Backoff
from streamer.clock import NODE_CLOCK
from streamer.config import StreamConfig, WindowConfig
from streamer.errors import SourceEnded, SourceError
from streamer.frames import Item, Modality, TextEvent, VideoFrame
from streamer.queues import DropBuffer, DropQueue
from streamer.sources.base import Source, recv_batch
from streamer.sources.textsource import TextSource
from streamer.sources.webrtc import Feed, WebRTCSource
from streamer.stats import StreamStats

SPEC = ModelSpec()


def event(i: int, stream: str = "s") -> TextEvent:
    return TextEvent(stream=stream, pts_ns=i, text=f"t{i}")


# -- the fast path is declared ----------------------------------------------------------


class _Counted(Source):
    """A source with no queue: it inherits the protocol's recv_nowait."""

    url = "counted"
    modalities: frozenset[Modality] = frozenset({"text"})
    live = False

    def __init__(self, n: int) -> None:
        self.left = n

    @property
    def dropped(self) -> int:
        return 0

    async def open(self) -> None:
        pass

    async def recv(self) -> Item:
        if not self.left:
            raise SourceEnded("done")
        self.left -= 1
        return event(self.left)

    async def close(self) -> None:
        pass


class _Queued(_Counted):
    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.fast = 0

    def recv_nowait(self) -> Item | None:
        self.fast += 1
        if not self.left:
            return None
        self.left -= 1
        return event(self.left)


async def test_recv_batch_uses_the_declared_fast_path_or_its_default() -> None:
    plain = _Counted(3)
    assert plain.recv_nowait() is None  # the protocol's default
    assert len(await recv_batch(plain, 10)) == 1
    queued = _Queued(5)
    assert len(await recv_batch(queued, 3)) == 3 and queued.fast == 2
    assert len(await recv_batch(queued, 10)) == 2
    with pytest.raises(SourceEnded):
        await recv_batch(queued, 10)


# -- the one drop-oldest queue ----------------------------------------------------------


async def test_the_shared_queue_drops_oldest_counts_and_ends_after_the_items() -> None:
    buf: DropBuffer[int] = DropBuffer(2)
    assert [buf.push(i) for i in range(4)] == [None, None, 0, 1]
    assert buf.dropped == 2 and list(buf) == [2, 3] and buf[0] == 2
    q: DropQueue[int] = DropQueue(2)
    for i in range(5):
        q.put_nowait(i)
    assert q.dropped == 3
    waiting = asyncio.ensure_future(q.put(9))  # backpressure: waits for room...
    await asyncio.sleep(0)
    assert not waiting.done()
    q.end(SourceEnded("over"))  # ...and the end releases it, discarding the item
    await asyncio.wait_for(waiting, 1)
    assert q.put_nowait(10) is None and len(q) == 2  # ignored after the end
    assert [await q.get(), q.get_nowait()] == [3, 4]
    assert q.get_nowait() is None  # the end is never raised here...
    with pytest.raises(SourceEnded, match="over"):
        await q.get()  # ...but by get()


# -- text is a source -------------------------------------------------------------------


async def test_a_text_source_follows_its_connection() -> None:
    drops: list[int] = []
    src = TextSource("s", maxsize=2, on_drop=lambda: drops.append(1))
    opening = asyncio.ensure_future(src.open())
    src.put(event(1))  # before the connection: it waits
    await asyncio.sleep(0)
    assert not opening.done()
    src.up()
    await asyncio.wait_for(opening, 1)
    for i in (2, 3):
        src.put(event(i))  # a full queue: 1 gives way
    assert drops == [1] and src.dropped == 1
    assert [e.pts_ns for e in await recv_batch(src, 10)] == [2, 3]
    src.put(event(4))
    src.down("lost")
    src.put(event(5))  # for the next connection
    assert (await src.recv()).pts_ns == 4
    with pytest.raises(SourceError, match="lost"):
        await src.recv()
    await src.close()
    reopening = asyncio.ensure_future(src.open())
    await asyncio.sleep(0)
    assert not reopening.done()
    src.up()
    await asyncio.wait_for(reopening, 1)
    assert (await src.recv()).pts_ns == 5


class _Runner:
    def submit_nowait(self, w: object) -> None:
        pass

    async def submit(self, w: object) -> None:
        pass

    def forget(self, stream: str) -> None:
        pass


async def test_the_worker_reads_text_as_a_source_and_marks_it_on_and_offline() -> None:
    statuses: asyncio.Queue[tuple[Modality, bool]] = asyncio.Queue()
    text = TextSource("s", maxsize=10)
    stats = StreamStats()
    w = StreamPipeline(
        StreamConfig(id="s"), window=WindowConfig(length=0.5, hop=0.5, max_delay=0.2),
        spec=SPEC, clock=NODE_CLOCK, sources=[], text=text, runner=_Runner(),  # type: ignore[arg-type]
        stats=stats, status=lambda _s, m, up: statuses.put_nowait((m, up)),
        # a source's reopen would wait 10 s: text's must not (its open() waits for the
        # connection, which backs off on its own)
        backoff=lambda: Backoff(base=10.0, cap=10.0, rng=lambda: 1.0),
    )  # fmt: skip
    assert w.modalities == ["text"] and w.realtime
    run = asyncio.ensure_future(w.run())
    try:
        text.up()
        assert await asyncio.wait_for(statuses.get(), 5) == ("text", True)
        text.put(event(NODE_CLOCK.now_ns()))
        text.down("the MQTT text connection was lost")
        assert await asyncio.wait_for(statuses.get(), 5) == ("text", False)
        assert stats.frames_in["text"] == 1 and stats.errors == 0  # an outage, not an error
        text.up()
        assert await asyncio.wait_for(statuses.get(), 5) == ("text", True)  # reopened
    finally:
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
    assert await asyncio.wait_for(statuses.get(), 5) == ("text", False)  # stopped


# -- WebRTC: conversion off the event loop ----------------------------------------------


class _Track:
    """A track whose frames the test hands over; ends when told."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.frames: asyncio.Queue[Any] = asyncio.Queue()
        self.ended = asyncio.Event()  # every frame was read

    async def recv(self) -> Any:
        frame = await self.frames.get()
        if frame is None:
            self.ended.set()
            raise MediaStreamError
        return frame


def _video_frame(i: int) -> av.VideoFrame:
    f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i, dtype=np.uint8), format="rgb24")
    f.pts, f.time_base = i, Fraction(1, 30)
    return f


async def test_webrtc_frames_are_converted_off_the_loop_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: list[int] = []
    real = webrtc.video_to_rgb

    def spy(frame: av.VideoFrame, size: int) -> Any:
        threads.append(threading.get_ident())
        return real(frame, size)

    monkeypatch.setattr(webrtc, "video_to_rgb", spy)
    feed = Feed(stream="s", modalities=frozenset({"video"}), spec=SPEC)
    track = _Track("video")
    feed.add_track(track)  # type: ignore[arg-type]
    got: list[VideoFrame] = []
    for i in range(3):
        track.frames.put_nowait(_video_frame(i))
        item = await asyncio.wait_for(feed.get(), 5)
        assert isinstance(item, VideoFrame)
        got.append(item)
    assert [int(g.image[0, 0, 0]) for g in got] == [0, 1, 2]
    assert got[0].image.shape == (SPEC.image_size, SPEC.image_size, 3)
    assert threads and threading.get_ident() not in threads
    feed.end("peer left")
    with pytest.raises(SourceError, match="peer left"):
        await feed.get()


async def test_a_slow_conversion_drops_the_oldest_decoded_frames(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gate, started = threading.Event(), threading.Event()
    real = webrtc.video_to_rgb

    def slow(frame: av.VideoFrame, size: int) -> Any:
        started.set()
        gate.wait(10)
        return real(frame, size)

    monkeypatch.setattr(webrtc, "video_to_rgb", slow)
    feed = Feed(stream="s", modalities=frozenset({"video"}), spec=SPEC)
    track = _Track("video")
    feed.add_track(track)  # type: ignore[arg-type]
    track.frames.put_nowait(_video_frame(0))
    await asyncio.to_thread(started.wait, 10)  # frame 0 is being converted
    for i in range(1, 10):
        track.frames.put_nowait(_video_frame(i))
    track.frames.put_nowait(None)  # the track ends; the reader had drained it all
    await asyncio.wait_for(track.ended.wait(), 5)  # the reader drained it all meanwhile
    gate.set()
    values = []
    for _ in range(1 + webrtc.DECODED_AHEAD):
        item = await asyncio.wait_for(feed.get(), 5)
        assert isinstance(item, VideoFrame)
        values.append(int(item.image[0, 0, 0]))
    assert values == [0, 8, 9]  # the newest waited; the loop was never blocked
    assert feed.dropped == 7


# -- WebRTC: the data channel's text ----------------------------------------------------


async def test_data_channel_text_reaches_the_windows_while_mqtt_text_is_down() -> None:
    """A peer's data-channel text goes with its frames, straight to the stream (as it did
    before text was a source): an MQTT outage, which alone sets the text status, holds
    none of it back; a stream without text takes none; rejects are counted by kind."""
    src = WebRTCSource("s", frozenset({"video"}), spec=SPEC, takes_text=True)
    feed = src.feed()
    assert src.attach(feed)
    feed.add_text(b'{"text": "seven"}')
    feed.add_text(b"\xff\xfe")  # not UTF-8
    feed.end("the peer left")  # after what it sent: the stream reads that first
    text = TextSource("s", maxsize=10)  # its MQTT connection never comes up
    stats = StreamStats()
    statuses: asyncio.Queue[tuple[Modality, bool]] = asyncio.Queue()
    w = StreamPipeline(
        StreamConfig(id="s", video="webrtc"), window=WindowConfig(length=0.5, hop=0.5,
        max_delay=0.2), spec=SPEC, clock=NODE_CLOCK, sources=[src], text=text,
        runner=_Runner(), stats=stats,  # type: ignore[arg-type]
        status=lambda _s, m, up: statuses.put_nowait((m, up)),
    )  # fmt: skip
    run = asyncio.ensure_future(w.run())
    try:
        assert await asyncio.wait_for(statuses.get(), 5) == ("video", True)
        assert await asyncio.wait_for(statuses.get(), 5) == ("video", False)  # peer gone
    finally:
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
    assert stats.frames_in["text"] == 1 and not text.connected
    assert src.rejected == {"not_utf8": 1}
    plain = WebRTCSource("p", frozenset({"video"}), spec=SPEC).feed()
    plain.add_text(b"eight")
    assert plain.get_nowait() is None  # a stream without text takes none
