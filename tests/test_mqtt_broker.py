"""EmbeddedBroker (amqtt, in-process): plain pub/sub, and the publisher against it."""

from __future__ import annotations

import asyncio

import aiomqtt
from conftest import free_port

from streamer.config import MqttConfig
from streamer.sinks.broker import EmbeddedBroker
from streamer.sinks.mqtt import MqttPublisher
from streamer.sinks.topics import Topics

T = 10.0


async def first(c: aiomqtt.Client) -> aiomqtt.Message:
    async with asyncio.timeout(T):
        async for m in c.messages:
            return m
    raise AssertionError("unreachable")


async def test_publish_subscribe_through_the_embedded_broker() -> None:
    port = free_port()
    async with EmbeddedBroker(port=port) as b:
        assert (b.port, b.url) == (port, f"mqtt://127.0.0.1:{port}")
        async with (
            aiomqtt.Client("127.0.0.1", b.port) as sub,
            aiomqtt.Client("127.0.0.1", b.port) as pub,
        ):
            await sub.subscribe("a/#", qos=1)
            await pub.publish("a/b", b"hello", qos=1)
            m = await first(sub)
            assert (m.topic.value, m.payload) == ("a/b", b"hello")


async def test_default_port_is_1883_or_a_free_one() -> None:
    async with EmbeddedBroker() as b:
        assert b.port > 0 and b.url.endswith(f":{b.port}")
        async with aiomqtt.Client("127.0.0.1", b.port) as c:
            await c.publish("x", b"1", qos=1)


async def test_publisher_against_the_embedded_broker() -> None:
    topics = Topics("test", "emb")
    async with EmbeddedBroker(port=free_port()) as b:
        async with aiomqtt.Client("127.0.0.1", b.port) as watcher:
            await watcher.subscribe(topics.prediction("s1"), qos=1)
            async with MqttPublisher(MqttConfig(url=b.url), topics, client_id="emb-pub") as p:
                await asyncio.wait_for(p.wait_connected(), T)
                p.set_retained(topics.label("s1"), "4")
                for i in range(100):
                    p.enqueue(topics.prediction("s1"), str(i), 1)
                got = []
                async with asyncio.timeout(T):
                    async for m in watcher.messages:
                        got.append(m.payload)
                        if len(got) == 100:
                            break
                assert got == [str(i).encode() for i in range(100)]
                assert await p.drain(T) == 0
        async with aiomqtt.Client("127.0.0.1", b.port) as fresh:
            await fresh.subscribe([(topics.available, 1), (topics.label("s1"), 1)])
            seen = {}
            async with asyncio.timeout(T):
                async for m in fresh.messages:
                    seen[m.topic.value] = (m.payload, m.retain)
                    if len(seen) == 2:
                        break
        assert seen == {topics.available: (b"stopped", True), topics.label("s1"): (b"4", True)}
