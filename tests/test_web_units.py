"""The bounded parts of the HTTP side: a WebRTC stream's slot and feed, the live-event fan-out."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from streamer.errors import SourceError
from streamer.frames import VideoFrame
from streamer.sources.webrtc import Feed, WebRTCSource
from streamer.web.events import LiveEvents, TooManySubscribers


def _frame(i: int) -> VideoFrame:
    return VideoFrame("s", i, np.zeros((2, 2, 3), dtype=np.uint8))


async def test_feed_drops_oldest_and_ends_after_what_is_queued() -> None:
    feed = Feed(maxsize=3)
    for i in range(5):
        feed.put(_frame(i))
    assert feed.dropped == 2
    feed.end("peer left")
    feed.put(_frame(9))  # after the end: ignored
    got = [(await feed.get()).pts_ns for _ in range(3)]
    assert got == [2, 3, 4]
    with pytest.raises(SourceError, match="webrtc: peer left"):
        await feed.get()


async def test_slot_takes_one_publisher_at_a_time_and_waits_for_the_next() -> None:
    src = WebRTCSource("s", frozenset({"video"}))
    opening = asyncio.create_task(src.open())
    await asyncio.sleep(0)  # let open() start waiting
    assert not opening.done()  # no publisher yet
    first = Feed(maxsize=2)
    assert src.attach(first) and src.busy
    await asyncio.wait_for(opening, 1)
    assert not src.attach(Feed())  # busy: a second publisher is refused
    for i in range(3):
        first.put(_frame(i))
    assert src.dropped == 1
    first.end("DELETE")
    assert not src.busy
    assert (await src.recv()).pts_ns == 1  # what was queued still comes out
    assert (await src.recv()).pts_ns == 2
    with pytest.raises(SourceError):
        await src.recv()
    await src.close()  # the worker lets go of the ended feed...
    reopening = asyncio.create_task(src.open())
    await asyncio.sleep(0)
    assert not reopening.done()  # ...and waits for the next publisher
    assert src.attach(Feed())
    await asyncio.wait_for(reopening, 1)
    assert src.dropped == 1  # kept across publishers


async def test_live_events_are_bounded_per_subscriber_and_capped() -> None:
    events = LiveEvents(max_subscribers=2, queue=2)
    async with events.subscribe("a") as sa, events.subscribe("b") as sb:
        with pytest.raises(TooManySubscribers):
            async with events.subscribe("a"):
                pass
        for i in range(4):
            events.publish("a", str(i).encode())
        assert await sa.next(1) == b"2"  # the two oldest were dropped
        assert await sa.next(1) == b"3"
        assert sa.queue.dropped == 2
        assert await sb.next(0.01) is None  # nothing for b: a timeout, not an error
        events.close()
        assert await sb.next(5) is None and sb.closed.is_set()
    assert len(events) == 0 and events.dropped == 2
