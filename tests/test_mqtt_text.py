"""MqttTextInput against a real Mosquitto: routing, rejections, state, reconnection.

Its text sources are read as a stream's worker reads them: ``open()`` returns once the
subscriptions are up, ``recv()`` raises SourceError once the connection is lost."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator

import aiomqtt
import pytest
from conftest import Mosquitto

from streamer.config import MqttConfig
from streamer.errors import SourceError
from streamer.frames import NS, TextEvent
from streamer.sources.mqtt_text import MqttTextInput
from streamer.sources.textsource import TextSource
from streamer.testing import FakeClock

T = 10.0


class Recorder:
    """Reads every text source of an input as a worker would; the states (opened: True,
    lost: False) are the first stream's, one per connection."""

    def __init__(self) -> None:
        self.events: dict[str, asyncio.Queue[TextEvent]] = {}
        self.states: asyncio.Queue[bool] = asyncio.Queue()

    @contextlib.asynccontextmanager
    async def reading(self, inp: MqttTextInput) -> AsyncIterator[None]:
        streams = list(dict.fromkeys(inp.routes.values()))
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(self._read(inp.source(s), states=i == 0))
                for i, s in enumerate(streams)
            ]
            try:
                yield
            finally:
                for t in tasks:
                    t.cancel()

    async def _read(self, src: TextSource, *, states: bool) -> None:
        events = self.events.setdefault(src.stream, asyncio.Queue())
        while True:
            await src.open()
            if states:
                self.states.put_nowait(True)
            try:
                while True:
                    ev = await src.recv()
                    assert isinstance(ev, TextEvent)
                    events.put_nowait(ev)
            except SourceError:
                if states:
                    self.states.put_nowait(False)
                await src.close()

    async def event(self, stream: str) -> TextEvent:
        return await asyncio.wait_for(self.events.setdefault(stream, asyncio.Queue()).get(), T)

    async def state(self) -> bool:
        return await asyncio.wait_for(self.states.get(), T)


def text_input(url: str, clock: FakeClock) -> MqttTextInput:
    return MqttTextInput(
        MqttConfig(url=url),
        {"n/cam1/text": "cam1", "n/cam2/text": "cam2"},
        clock=clock,
        client_id="text-in",
    )


async def test_valid_events_are_routed_and_bad_ones_counted(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="streamer.sources.mqtt_text")
    rec, clock = Recorder(), FakeClock()
    inp = text_input(mosquitto.url, clock)
    async with rec.reading(inp), inp:
        assert await rec.state() is True  # subscribed
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as pub:
            ts = clock.now_ns() / NS - 1.5
            sends = [
                ("n/cam1/text", b"seven"),
                ("n/cam1/text", b"x" * 5000),  # oversized
                ("n/cam1/text", b"\xff\xfe"),  # not_utf8
                ("n/cam1/text", b"\xff"),  # not_utf8 again: counted, not logged again
                ("n/cam2/text", b'{"text": "a", "ts": NaN}'),  # bad_field
                ("n/cam2/text", b'{"text": '),  # malformed_json
                ("n/cam2/text", b'{"a":' + b"[" * 4000),  # malformed_json, too deep
                ("n/other/text", b"not routed"),  # ignored
                ("n/cam2/text", b""),  # empty
                ("n/cam2/text", json.dumps({"text": "eight", "ts": ts}).encode()),
                ("n/cam1/text", b"nine"),
            ]
            for topic, payload in sends:
                await pub.publish(topic, payload, qos=1)
            # in order within a stream (each stream has its own source)
            got = [await rec.event("cam1"), await rec.event("cam2"), await rec.event("cam1")]
        assert [(e.stream, e.text) for e in got] == [
            ("cam1", "seven"),
            ("cam2", "eight"),
            ("cam1", "nine"),
        ]
        assert got[0].pts_ns == clock.now_ns()
        assert abs(got[1].pts_ns - ts * NS) < 1_000  # ns from the event's ts
        assert inp.rejected == {
            "cam1": {"oversized": 1, "not_utf8": 2},
            "cam2": {"bad_field": 1, "malformed_json": 2, "empty": 1},
        }
        assert inp.received == {"cam1": 2, "cam2": 1}
    assert await rec.state() is False  # the clean exit is a disconnection too
    logged = [r.getMessage() for r in caplog.records if r.name == "streamer.sources.mqtt_text"]
    assert len(logged) == 5  # once per stream and kind
    assert all("\n" not in line for line in logged)


async def test_reconnects_and_resubscribes_after_a_broker_restart(mosquitto: Mosquitto) -> None:
    rec, clock = Recorder(), FakeClock()
    inp = text_input(mosquitto.url, clock)
    async with rec.reading(inp), inp:
        assert await rec.state() is True
        mosquitto.stop()
        assert await rec.state() is False
        mosquitto.start()
        assert await rec.state() is True  # subscriptions acknowledged again
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as pub:
            await pub.publish("n/cam2/text", b"back", qos=1)
            ev = await rec.event("cam2")
        assert (ev.stream, ev.text) == ("cam2", "back")


class StalledInput(MqttTextInput):
    """Its reader waits at a gate, as a busy loop would: the incoming queue fills up."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.gate = asyncio.Event()
        self.discard_seen = asyncio.Event()

    def _discard(self, message: aiomqtt.Message) -> None:
        super()._discard(message)
        self.discard_seen.set()

    async def _receive(self, client: aiomqtt.Client) -> None:
        await self.gate.wait()
        await super()._receive(client)


async def test_a_flood_past_the_incoming_queue_is_counted_per_stream_and_logged_once(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import streamer.sources.mqtt_text as mqtt_text

    monkeypatch.setattr(mqtt_text, "MAX_QUEUED", 10)
    caplog.set_level(logging.WARNING)
    rec, clock = Recorder(), FakeClock()
    inp = StalledInput(
        MqttConfig(url=mosquitto.url), {"n/cam1/text": "cam1"}, clock=clock, client_id="text-in"
    )
    async with rec.reading(inp), inp:
        assert await rec.state() is True
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as pub:
            for i in range(50):
                await pub.publish("n/cam1/text", f"event {i}".encode(), qos=1)
        async with asyncio.timeout(T):
            while inp.discarded["cam1"] < 40:  # the broker is still delivering
                inp.discard_seen.clear()
                await inp.discard_seen.wait()
        inp.gate.set()
        got = [(await rec.event("cam1")).text for _ in range(10)]
    assert got == [f"event {i}" for i in range(40, 50)]  # the oldest gave way
    assert inp.discarded == {"cam1": 40}
    lines = [r.getMessage() for r in caplog.records if "queued unread" in r.getMessage()]
    assert len(lines) == 1 and "stream cam1" in lines[0]
    assert not any("Message queue is full" in r.getMessage() for r in caplog.records)
