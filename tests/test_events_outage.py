"""Events survive a broker outage as predictions do: through the MQTT sink's outbox, in
order with the predictions that caused them, against a real Mosquitto stopped meanwhile.
"""

from __future__ import annotations

import asyncio
import json

from conftest import Mosquitto
from test_events import pred
from test_mqtt_publisher import T, client, collect, persistent_mosquitto

from streamer.config import MqttConfig
from streamer.events.settings import EventsConfig
from streamer.events.tracker import EventTracker
from streamer.sinks.mqtt_sink import MqttSink
from streamer.sinks.topics import Topics

__all__ = ["persistent_mosquitto"]  # the fixture, used by name


async def test_events_made_during_an_outage_arrive_after_it_in_order(
    persistent_mosquitto: Mosquitto,
) -> None:
    broker = persistent_mosquitto
    topics = Topics("test", "n", discovery_prefix=None)
    watched = [topics.prediction("cam"), topics.events("cam")]
    async with client(broker.port, "events-sub", clean=False) as sub:
        await sub.subscribe([(t, 1) for t in watched])
    sink = MqttSink(MqttConfig(url=broker.url), topics, client_id="ev", streams=["cam"],
                    announce=False, event_labels=["cat"])  # fmt: skip
    tracker = EventTracker(EventsConfig(min_windows=1, cooldown_s=0.0), node="n", run="r")
    tracker.subscribe(sink.publish)
    scores = [0.0, 0.9, 0.9, 0.1, 0.0, 0.8, 0.0]
    async with sink:
        await asyncio.wait_for(sink.publisher.wait_connected(), T)
        broker.stop()
        await asyncio.wait_for(sink.publisher.wait_connected(False), T)
        expected: list[str] = []
        for i, s in enumerate(scores):
            p = pred(i, cat=s)
            sink.publish(p)
            expected.append(f"prediction {i}")
            expected += [f"{m.type} {m.label}" for m in tracker.observe(p)]
        broker.start()
        assert await sink.drain(T) == 0
    assert expected.count("new cat") == 2 and expected.count("end cat") == 2
    async with client(broker.port, "events-sub", clean=False) as sub:
        got = await collect(sub, len(expected))
    seen = []
    for payload in got:
        m = json.loads(payload)
        seen.append(
            f"prediction {m['seq']}" if "seq" in m else f"{m['type']} {m['event']['label']}"
        )
    assert seen == expected
