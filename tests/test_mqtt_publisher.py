"""MqttPublisher against a real Mosquitto: availability, Last Will, outages, retained state.

No sleeps for synchronisation: every wait is on a real message or a publisher event,
bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiomqtt
import pytest
from conftest import REPO, Mosquitto, free_port, start_mosquitto

from streamer.config import MqttConfig
from streamer.sinks.discovery import ha_label_config
from streamer.sinks.mqtt import MqttPublisher
from streamer.sinks.topics import Topics

T = 10.0  # generous bound for any single wait


def client(port: int, ident: str | None = None, *, clean: bool = True) -> aiomqtt.Client:
    return aiomqtt.Client("127.0.0.1", port, identifier=ident, clean_session=clean)


async def retained(port: int, topics: list[str]) -> dict[str, aiomqtt.Message]:
    """What a fresh subscriber receives first on each topic (the retained message)."""
    got: dict[str, aiomqtt.Message] = {}
    async with client(port) as c:
        await c.subscribe([(t, 1) for t in topics])
        async with asyncio.timeout(T):
            async for m in c.messages:
                got.setdefault(m.topic.value, m)
                if len(got) == len(topics):
                    break
    return got


async def collect(c: aiomqtt.Client, n: int) -> list[bytes]:
    out: list[bytes] = []
    async with asyncio.timeout(T):
        async for m in c.messages:
            assert isinstance(m.payload, bytes)
            out.append(m.payload)
            if len(out) == n:
                break
    return out


@pytest.fixture
def persistent_mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A Mosquitto that saves sessions on a clean stop and restores them on start."""
    d = tmp_path / "persistent"
    d.mkdir()
    extra = f"persistence true\npersistence_location {d}/\nuser root\nmax_queued_messages 0\n"
    m = start_mosquitto(d, extra)
    try:
        yield m
    finally:
        m.stop()


@pytest.fixture
def topics() -> Topics:
    return Topics("test", "node1")


@pytest.fixture
async def publisher(mosquitto: Mosquitto, topics: Topics) -> AsyncIterator[MqttPublisher]:
    async with MqttPublisher(MqttConfig(url=mosquitto.url), topics, client_id="pub") as p:
        await asyncio.wait_for(p.wait_connected(), T)
        yield p


async def test_online_retained_after_connect_and_stopped_after_clean_exit(
    mosquitto: Mosquitto, topics: Topics
) -> None:
    async with MqttPublisher(MqttConfig(url=mosquitto.url), topics, client_id="pub") as p:
        await asyncio.wait_for(p.wait_connected(), T)
        assert p.connected
        m = (await retained(mosquitto.port, [topics.available]))[topics.available]
        assert (m.payload, m.retain) == (b"online", True)
        p.enqueue(topics.prediction("s1"), b"{}", 1)
    assert not p.connected
    assert p.depth == 0 and p.published == 1  # the clean exit drained the outbox
    m = (await retained(mosquitto.port, [topics.available]))[topics.available]
    assert (m.payload, m.retain) == (b"stopped", True)


async def test_last_will_offline_reaches_a_subscriber_when_the_process_is_killed(
    mosquitto: Mosquitto,
) -> None:
    topic = "test/victim/available"
    script = (
        "import asyncio, sys\n"
        "from streamer.config import MqttConfig\n"
        "from streamer.sinks.mqtt import MqttPublisher\n"
        "from streamer.sinks.topics import Topics\n"
        "async def main():\n"
        "    cfg = MqttConfig(url=sys.argv[1])\n"
        "    async with MqttPublisher(cfg, Topics('test', 'victim'), client_id='victim') as p:\n"
        "        await p.wait_connected()\n"
        "        print('ready', flush=True)\n"
        "        await asyncio.Event().wait()\n"
        "asyncio.run(main())\n"
    )
    async with client(mosquitto.port) as sub:
        await sub.subscribe(topic, qos=1)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            mosquitto.url,
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line.strip() == b"ready"
            assert await collect(sub, 1) == [b"online"]
        finally:
            proc.kill()  # SIGKILL: no DISCONNECT, the broker must send the Will
            await proc.wait()
        assert await collect(sub, 1) == [b"offline"]
    m = (await retained(mosquitto.port, [topic]))[topic]
    assert (m.payload, m.retain) == (b"offline", True)


async def test_messages_enqueued_during_an_outage_arrive_in_order(
    persistent_mosquitto: Mosquitto, topics: Topics
) -> None:
    broker = persistent_mosquitto
    topic = topics.prediction("s1")
    # a subscriber with a persistent session: the broker queues for it while it is away
    async with client(broker.port, "outage-sub", clean=False) as sub:
        await sub.subscribe(topic, qos=1)
    cfg = MqttConfig(url=broker.url)
    async with MqttPublisher(cfg, topics, client_id="pub") as p:
        await asyncio.wait_for(p.wait_connected(), T)
        p.enqueue(topic, b"0", 1)
        assert await p.drain(T) == 0
        broker.stop()
        await asyncio.wait_for(p.wait_connected(False), T)
        for i in range(1, 200):
            p.enqueue(topic, str(i), 1)  # never blocks, never raises
        assert p.depth == 199
        broker.start()
        assert await p.drain(T) == 0
        assert p.connected and p.dropped == 0 and p.published == 200
    async with client(broker.port, "outage-sub", clean=False) as sub:
        got = await collect(sub, 200)
    assert got == [str(i).encode() for i in range(200)]


async def test_outbox_overflow_during_an_outage_drops_the_oldest_and_counts_it(
    persistent_mosquitto: Mosquitto, topics: Topics
) -> None:
    broker = persistent_mosquitto
    topic = topics.prediction("s1")
    async with client(broker.port, "overflow-sub", clean=False) as sub:
        await sub.subscribe(topic, qos=1)
    cfg = MqttConfig(url=broker.url, outbox_size=20)
    async with MqttPublisher(cfg, topics, client_id="pub") as p:
        await asyncio.wait_for(p.wait_connected(), T)
        broker.stop()
        await asyncio.wait_for(p.wait_connected(False), T)
        for i in range(50):
            p.enqueue(topic, str(i), 1)
        assert (p.depth, p.dropped) == (20, 30)
        broker.start()
        assert await p.drain(T) == 0
    async with client(broker.port, "overflow-sub", clean=False) as sub:
        got = await collect(sub, 20)
    assert got == [str(i).encode() for i in range(30, 50)]


async def test_retained_state_is_republished_after_a_restart_without_persistence(
    mosquitto: Mosquitto, publisher: MqttPublisher, topics: Topics
) -> None:
    label, status = topics.label("s1"), topics.status("s1", "video")
    publisher.set_retained(label, "3")
    publisher.set_retained(label, "7")  # only the latest is kept
    publisher.set_retained(status, "online")
    assert await publisher.drain(T) == 0
    mosquitto.stop()  # persistence false: the broker forgets every retained message
    await asyncio.wait_for(publisher.wait_connected(False), T)
    mosquitto.start()
    await asyncio.wait_for(publisher.wait_connected(), T)  # online + state acknowledged
    got = await retained(mosquitto.port, [label, status, topics.available])
    assert {t: (m.payload, m.retain) for t, m in got.items()} == {
        label: (b"7", True),
        status: (b"online", True),
        topics.available: (b"online", True),
    }


def test_ha_discovery_config_fields(topics: Topics) -> None:
    c = ha_label_config(topics, "node1", "s1")
    assert c["unique_id"] == "streamer/node1/s1/label"
    assert c["state_topic"] == "test/node1/s1/label"
    assert c["json_attributes_topic"] == "test/node1/s1/prediction"
    # the node's and the stream's availability, both needed
    assert [a["topic"] for a in c["availability"]] == ["test/node1/available",
                                                       "test/node1/s1/available"]  # fmt: skip
    assert c["availability_mode"] == "all" and "availability_topic" not in c
    for a in c["availability"]:
        assert (a["payload_available"], a["payload_not_available"]) == ("online", "offline")
        assert "online" in a["value_template"]
    assert c["device"]["manufacturer"] == "streamer"
    assert c["device"]["identifiers"] == ["streamer_node1"]
    assert c["name"] and c["icon"]
    json.dumps(c)


async def test_ha_discovery_is_published_retained(
    mosquitto: Mosquitto, publisher: MqttPublisher, topics: Topics
) -> None:
    topic = topics.ha_discovery("s1")
    assert topic == "homeassistant/sensor/node1/s1_label/config"
    publisher.set_retained(topic, json.dumps(ha_label_config(topics, "node1", "s1")))
    assert await publisher.drain(T) == 0
    m = (await retained(mosquitto.port, [topic]))[topic]
    assert m.retain and m.qos == 1
    assert isinstance(m.payload, bytes)
    assert json.loads(m.payload) == ha_label_config(topics, "node1", "s1")


async def test_a_broker_that_never_comes_up_costs_nothing_but_a_log_line(
    topics: Topics, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = MqttConfig(url=f"mqtt://127.0.0.1:{free_port()}", outbox_size=3)
    caplog.set_level(logging.DEBUG, logger="streamer.sinks.mqtt")
    p = MqttPublisher(cfg, topics, client_id="lonely")
    async with p:
        for i in range(5):
            p.enqueue(topics.prediction("s1"), str(i), 1)
        assert (p.depth, p.dropped, p.connected) == (3, 2, False)
        assert await p.close(0.2) == 3
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    # one line for the outage (later attempts log at DEBUG), one for the undelivered ones
    assert sum("unavailable" in r.getMessage() for r in warnings) == 1
    assert sum("undelivered" in r.getMessage() for r in warnings) == 1


def test_enqueue_rejects_what_no_broker_would_take(topics: Topics) -> None:
    p = MqttPublisher(MqttConfig(), topics, client_id="x")
    with pytest.raises(ValueError):
        p.enqueue("a/+/b", b"", 1)
    with pytest.raises(ValueError):
        p.enqueue("a/b", b"", 3)


async def test_publishes_while_disconnected_mid_batch_are_not_lost(
    persistent_mosquitto: Mosquitto, topics: Topics
) -> None:
    """Stop the broker while a large backlog is being drained: what was in flight goes
    again (duplicates allowed), nothing is lost, and order is kept per first delivery."""
    broker = persistent_mosquitto
    topic = topics.prediction("s1")
    async with client(broker.port, "midflight-sub", clean=False) as sub:
        await sub.subscribe(topic, qos=1)
    n = 3000
    async with MqttPublisher(MqttConfig(url=broker.url), topics, client_id="pub") as p:
        await asyncio.wait_for(p.wait_connected(), T)
        async with client(broker.port) as live:
            await live.subscribe(topic, qos=1)
            for i in range(n):
                p.enqueue(topic, str(i), 1)
            await collect(live, 1)  # the drain is under way
        broker.stop()
        await asyncio.wait_for(p.wait_connected(False), T)
        assert p.depth > 0  # the outage happened mid-drain
        broker.start()
        assert await p.drain(T) == 0
    seen: list[int] = []
    async with client(broker.port, "midflight-sub", clean=False) as sub:
        async with asyncio.timeout(T):
            async for m in sub.messages:
                assert isinstance(m.payload, bytes)
                seen.append(int(m.payload))
                if set(seen) >= set(range(n)):
                    break
    first = list(dict.fromkeys(seen))
    assert sorted(first) == list(range(n))


async def test_the_window_keeps_flowing_against_a_broker_with_nagle_on(
    publisher: MqttPublisher, topics: Topics
) -> None:
    """Mosquitto leaves Nagle on: a window that waited for all its acks before sending
    more stalled ~40 ms per window (~300 msg/s). The sliding window does thousands."""
    for i in range(3000):
        publisher.enqueue(topics.prediction("s1"), str(i), 1)
    assert await publisher.drain(5.0) == 0
    assert publisher.published == 3000
