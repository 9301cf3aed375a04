"""The outbox: bounded, drop-oldest counted, order kept, confirm only what was peeked."""

from __future__ import annotations

import asyncio

import pytest

from streamer.backoff import Backoff
from streamer.sinks.outbox import Message, Outbox
from streamer.sinks.topics import Topics


def msg(i: int) -> Message:
    return Message("t/x", str(i).encode(), 1)


def payloads(box: Outbox) -> list[int]:
    return [int(m.payload) for m in box.peek(len(box) + 1).messages]


def test_fifo_order_and_peek_does_not_remove() -> None:
    box = Outbox(10)
    for i in range(5):
        assert box.put(msg(i))
    batch = box.peek(3)
    assert [int(m.payload) for m in batch.messages] == [0, 1, 2]
    assert len(box) == 5
    assert box.confirm_through(batch.seq + len(batch) - 1) == 3
    assert payloads(box) == [3, 4]


def test_full_drops_oldest_and_counts() -> None:
    box = Outbox(3)
    kept = [box.put(msg(i)) for i in range(7)]
    assert kept == [True, True, True, False, False, False, False]
    assert len(box) == 3
    assert box.dropped == 4
    assert payloads(box) == [4, 5, 6]


def test_confirm_after_overflow_never_removes_unsent_messages() -> None:
    box = Outbox(4)
    for i in range(4):
        box.put(msg(i))
    batch = box.peek(2)  # 0, 1 in flight
    box.put(msg(4))  # drops 0
    box.put(msg(5))  # drops 1
    box.put(msg(6))  # drops 2 (not in flight)
    last = batch.seq + len(batch) - 1
    assert box.confirm_through(last) == 0  # both in-flight messages were already dropped
    assert payloads(box) == [3, 4, 5, 6]
    batch = box.peek(2)
    box.put(msg(7))  # drops 3, which is in flight
    assert box.confirm_through(batch.seq + len(batch) - 1) == 1  # only 4 is left of the batch
    assert payloads(box) == [5, 6, 7]
    assert box.dropped == 4


def test_rejects_bad_size() -> None:
    with pytest.raises(ValueError):
        Outbox(0)


async def test_events_wait_without_polling() -> None:
    box = Outbox(5)
    await asyncio.wait_for(box.wait_empty(), 1)  # empty from the start
    box.put(msg(1))
    empty = asyncio.ensure_future(box.wait_empty())
    await asyncio.sleep(0)
    assert not empty.done()
    box.confirm_through(box.end_seq - 1)
    await asyncio.wait_for(empty, 1)
    assert len(box) == 0


def test_backoff_full_jitter_doubles_to_cap_and_resets() -> None:
    top = Backoff(base=0.05, cap=5.0, rng=lambda: 1.0)
    ceilings = [top.next_delay() for _ in range(10)]
    assert ceilings == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0])
    top.reset()
    assert top.next_delay() == pytest.approx(0.05)
    assert Backoff(rng=lambda: 0.0).next_delay() == 0.0
    jittered = Backoff()
    for _ in range(50):
        assert 0.0 <= jittered.next_delay() <= 5.0


def test_topics() -> None:
    t = Topics("streamer", "edge-1")
    assert t.available == "streamer/edge-1/available"
    assert t.prediction("cam1") == "streamer/edge-1/cam1/prediction"
    assert t.label("cam1") == "streamer/edge-1/cam1/label"
    assert t.status("cam1", "audio") == "streamer/edge-1/cam1/status/audio"
    assert t.text("cam1") == "streamer/edge-1/cam1/text"
    assert t.stats == "streamer/edge-1/stats"
    assert t.stream_available("cam1") == "streamer/edge-1/cam1/available"
    assert t.ha_discovery("cam1") == "homeassistant/sensor/edge-1/cam1_label/config"
    assert t.ha_legacy("cam1") == "homeassistant/sensor/edge-1_cam1/label/config"


def test_get_by_sequence_and_confirm_through() -> None:
    box = Outbox(3)
    for i in range(5):  # 0 and 1 dropped
        box.put(msg(i))
    assert (box.head_seq, box.end_seq) == (2, 5)
    assert box.get(1) is None and box.get(5) is None
    m = box.get(3)
    assert m is not None and m.payload == b"3"
    assert box.confirm_through(3) == 2
    assert payloads(box) == [4]
    assert box.confirm_through(3) == 0
