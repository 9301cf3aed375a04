"""``publish_per_s``: QoS 1 predictions per second the MQTT sink delivers to Mosquitto,
through its bounded outbox and sliding in-flight window, acknowledged by the broker.
The best of ``repeats`` runs on one connection: a run takes about two seconds, and on a
shared (virtual) machine such runs vary by 20 % or more."""

from __future__ import annotations

import time

from streamer.config import MqttConfig
from streamer.sinks.mqtt import MqttPublisher
from streamer.sinks.topics import Topics

# a prediction of the contract's size (~700 bytes)
PAYLOAD = (
    b'{"schema":"streamer.prediction/1","node":"bench","stream":"cam1","run":"5f0c1d2e3f4a5b6c",'
    b'"seq":0,"window":{"start":1764160000.0,"end":1764160002.0},"label":"7","score":0.93,'
    b'"scores":{"0":0.001,"1":0.002,"2":0.003,"3":0.004,"4":0.005,"5":0.006,"6":0.007,'
    b'"7":0.93,"8":0.02,"9":0.022},"modalities":{"video":{"present":true,"frames":8},'
    b'"audio":{"present":true,"seconds":2.0},"text":{"present":false,"events":0}},'
    b'"latency_ms":{"inference":3.1,"end_to_publish":18.4},'
    b'"model":{"name":"avdigits-fusion","version":"sha256:0d0afda39143"}}'
)


async def publish_per_s(port: int, n: int = 20_000, *, repeats: int = 3) -> float:
    cfg = MqttConfig(url=f"mqtt://127.0.0.1:{port}", outbox_size=n + 100)
    topics = Topics("bench", "bench")
    best = 0.0
    async with MqttPublisher(cfg, topics, client_id="streamer-bench-publish") as pub:
        await pub.wait_connected()
        await pub.drain(10)  # "online" and friends first
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(n):
                pub.enqueue(topics.prediction("cam1"), PAYLOAD, 1)
            left = await pub.drain(120)
            best = max(best, (n - left) / (time.perf_counter() - t0))
    return best
