"""A durable subscriber (persistent QoS 1 session, reconnecting) and the streamer's own
account of what it published (its exit log)."""

from __future__ import annotations

import asyncio
import json
import re
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import aiomqtt

SUMMARY = re.compile(r"stream (\S+): (\d+) predictions, seq 0-(-?\d+), run (\S+)")


def published(log: Path) -> dict[str, tuple[str, int]]:
    """stream -> (run, how many predictions), from ``streamer run``'s exit summary."""
    return {m[1]: (m[4], int(m[2])) for m in SUMMARY.finditer(log.read_text())}


class DurableSubscriber:
    """Subscribes at QoS 1 with a persistent session (clean_session off) and reconnects
    whenever the broker goes away, so the broker keeps its messages while it is offline."""

    def __init__(self, port: int, topic: str, client_id: str = "durable-subscriber") -> None:
        self.port = port
        self.topic = topic
        self.client_id = client_id
        self.seqs: dict[tuple[str, str], set[int]] = defaultdict(set)  # (run, stream) -> seqs
        self.received = 0
        self.connected = asyncio.Event()
        self.connects = 0
        self._changed = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1", self.port, identifier=self.client_id, clean_session=False
                ) as client:
                    await client.subscribe(self.topic, qos=1)
                    self.connects += 1
                    self.connected.set()
                    self._changed.set()
                    async for msg in client.messages:
                        p = json.loads(bytes(msg.payload))  # type: ignore[arg-type]
                        self.seqs[(p["run"], p["stream"])].add(int(p["seq"]))
                        self.received += 1
                        self._changed.set()
            except aiomqtt.MqttError:
                self.connected.clear()
                await asyncio.sleep(0.2)  # the broker is down: try again (a reconnect loop)

    def count(self, stream: str) -> int:
        return sum(len(s) for (_, st), s in self.seqs.items() if st == stream)

    async def until(self, predicate: Callable[[DurableSubscriber], bool], seconds: float) -> None:
        async with asyncio.timeout(seconds):
            while not predicate(self):
                self._changed.clear()
                await self._changed.wait()

    def missing(self, run: str, stream: str, n: int) -> list[int]:
        return sorted(set(range(n)) - self.seqs[(run, stream)])
