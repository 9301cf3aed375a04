"""``streamer demo``: an embedded broker, live synthetic streams, the shipped model, and a
live table of the latest predictions (plain lines when stdout is not a terminal)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from typing import Any

import aiomqtt

from streamer.config import Config, MqttConfig, StreamConfig
from streamer.pipeline.node import Node
from streamer.sinks.broker import EmbeddedBroker
from streamer.sources.synthetic import scripted_text
from streamer.subscribe import format_prediction

TEXT_EVERY_S = 1.0


def demo_config(url: str, streams: int) -> Config:
    return Config(
        node="demo",
        mqtt=MqttConfig(url=url),
        streams=[
            StreamConfig(
                id=f"demo{i}",
                video=f"synthetic:pattern?seed={i}&fps=10&size=320x240",
                audio=f"synthetic:tone?freq={330 + 110 * i}&seed={i}",
            )
            for i in range(streams)
        ],
    )


async def _publish_text(url_port: int, cfg: Config) -> None:
    """Scripted text events for every stream, as a real MQTT client would send them."""
    scripts = {s.id: scripted_text(seed=i) for i, s in enumerate(cfg.streams)}
    async with aiomqtt.Client("127.0.0.1", url_port) as client:
        while True:
            for s in cfg.streams:
                topic = s.text_topics(cfg.mqtt.prefix, cfg.node)[0]
                await client.publish(topic, next(scripts[s.id]).encode(), qos=1)
            await asyncio.sleep(TEXT_EVERY_S)


class _View:
    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.latest: dict[str, dict[str, Any]] = {}
        self.counts: dict[str, int] = {}
        self.t0 = time.monotonic()

    def add(self, p: dict[str, Any]) -> None:
        self.latest[p["stream"]] = p
        self.counts[p["stream"]] = self.counts.get(p["stream"], 0) + 1
        if not self.tty:
            print(format_prediction(p), flush=True)

    def table(self) -> Any:
        from rich.table import Table

        t = Table(title="streamer demo: latest prediction per stream")
        for col in (
            "stream",
            "seq",
            "label",
            "score",
            "video",
            "audio",
            "text",
            "windows/s",
            "inference ms",
            "end→publish ms",
        ):
            t.add_column(col)
        elapsed = max(time.monotonic() - self.t0, 1e-6)
        for sid, p in sorted(self.latest.items()):
            m = p["modalities"]
            t.add_row(
                sid,
                str(p["seq"]),
                p["label"],
                f"{p['score']:.2f}",
                f"{m['video']['frames']} fr" if m["video"]["present"] else "missing",
                f"{m['audio']['seconds']:.2f} s" if m["audio"]["present"] else "missing",
                f"{m['text']['events']} ev" if m["text"]["present"] else "-",
                f"{self.counts[sid] / elapsed:.1f}",
                f"{p['latency_ms']['inference']:.1f}",
                f"{p['latency_ms']['end_to_publish']:.1f}",
            )
        return t


async def _watch(port: int, prefix: str, view: _View) -> None:
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(f"{prefix}/+/+/prediction", qos=0)
        async for msg in client.messages:
            with contextlib.suppress(ValueError, TypeError):
                view.add(json.loads(bytes(msg.payload)))


async def demo(*, duration: float | None, streams: int, port: int | None) -> int:
    tty = sys.stdout.isatty()
    async with EmbeddedBroker(port=port) as broker:
        cfg = demo_config(broker.url, streams)
        node = Node(cfg)
        print(f"streamer demo: {streams} synthetic stream(s), embedded broker at {broker.url}")
        print("subscribe from another terminal with either of:")
        print(f"  streamer subscribe --url {broker.url}")
        print(f"  mosquitto_sub -h 127.0.0.1 -p {broker.port} -t 'streamer/#' -v")
        if not node.loaded.trained:
            print("note: the shipped model is untrained for now; labels are not meaningful yet")
        print("Ctrl-C stops." if duration is None else f"running for {duration:g} s.", flush=True)
        view = _View(tty)
        loop = asyncio.get_running_loop()
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, node.stop)
        if duration is not None:
            loop.call_later(duration, node.stop)
        async with asyncio.TaskGroup() as tg:
            helpers = [
                tg.create_task(_publish_text(broker.port, cfg), name="demo-text"),
                tg.create_task(_watch(broker.port, cfg.mqtt.prefix, view), name="demo-view"),
            ]
            if tty:
                helpers.append(tg.create_task(_live(view), name="demo-table"))
            rc = await node.run()
            for h in helpers:
                h.cancel()
        total = sum(view.counts.values())
        print(f"demo done: {node.published} predictions published, {total} received by the viewer")
    return rc


async def _live(view: _View) -> None:
    from rich.live import Live

    with Live(view.table(), refresh_per_second=4) as live:
        while True:
            await asyncio.sleep(0.25)
            live.update(view.table())
