"""``streamer demo``: an embedded broker, live AV-digits streams (``synthetic:avdigits``:
handwriting on video, speech on audio, text events sent over MQTT), the shipped model,
and a live table of the latest predictions with their accuracy against the generator's
ground truth (plain lines when stdout is not a terminal)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from typing import Any

from streamer.app.node import Node
from streamer.config import Config, MqttConfig, StreamConfig
from streamer.datasets.avdigits.live import segment_index
from streamer.mqttconn import Client
from streamer.sinks.broker import EmbeddedBroker
from streamer.sources.synthetic import avdigits_label, avdigits_text
from streamer.subscribe import format_prediction


def demo_config(url: str, streams: int) -> Config:
    """Stream ``demoN`` shows AV-digits with seed N (video and audio from one source)."""
    return Config(
        node="demo",
        mqtt=MqttConfig(url=url),
        streams=[
            StreamConfig(
                id=f"demo{i}",
                video=f"synthetic:avdigits?seed={i}",
                audio=f"synthetic:avdigits?seed={i}",
            )
            for i in range(streams)
        ],
    )


def seed_of(stream: str) -> int:
    return int(stream.removeprefix("demo"))


def truth(stream: str, start: float, end: float) -> str | None:
    """The generator's label of a window, when the window lies inside one segment."""
    if segment_index(start) != segment_index(end - 1e-6):
        return None
    return avdigits_label(seed_of(stream), start)


async def _publish_text(port: int, topic: str, seed: int) -> None:
    """The stream's text events, each at its time, as a real MQTT client would send them."""
    async with Client("127.0.0.1", port) as client:
        for t, text in avdigits_text(seed):
            await asyncio.sleep(max(0.0, t - time.time()))  # pacing to the event's time
            payload = json.dumps({"text": text, "ts": t})
            await client.publish(topic, payload.encode(), qos=1)


class _View:
    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.latest: dict[str, dict[str, Any]] = {}
        self.counts: dict[str, int] = {}
        self.scored: dict[str, int] = {}  # windows inside one segment
        self.correct: dict[str, int] = {}
        self.t0 = time.monotonic()

    def add(self, p: dict[str, Any]) -> None:
        sid = p["stream"]
        self.latest[sid] = p
        self.counts[sid] = self.counts.get(sid, 0) + 1
        want = truth(sid, p["window"]["start"], p["window"]["end"])
        if want is not None and not p.get("partial", False):  # not cut short by the stop
            self.scored[sid] = self.scored.get(sid, 0) + 1
            self.correct[sid] = self.correct.get(sid, 0) + (p["label"] == want)
        if not self.tty:
            print(f"{format_prediction(p)} truth={want or '-'}", flush=True)

    def accuracy(self, sid: str | None = None) -> tuple[int, int]:
        """(correct, scored) for one stream or all."""
        keys = [sid] if sid else list(self.scored)
        return sum(self.correct.get(k, 0) for k in keys), sum(self.scored.get(k, 0) for k in keys)

    def table(self) -> Any:
        from rich.table import Table

        t = Table(title="streamer demo: latest prediction per stream")
        for col in ("stream", "seq", "label", "truth", "score", "video", "audio", "text",
                    "accuracy", "windows/s", "inference ms", "end→publish ms"):  # fmt: skip
            t.add_column(col)
        elapsed = max(time.monotonic() - self.t0, 1e-6)
        for sid, p in sorted(self.latest.items()):
            m = p["modalities"]
            ok, n = self.accuracy(sid)
            want = truth(sid, p["window"]["start"], p["window"]["end"])
            t.add_row(
                sid, str(p["seq"]), p["label"], want or "-", f"{p['score']:.2f}",
                f"{m['video']['frames']} fr" if m["video"]["present"] else "missing",
                f"{m['audio']['seconds']:.2f} s" if m["audio"]["present"] else "missing",
                f"{m['text']['events']} ev" if m["text"]["present"] else "-",
                f"{100 * ok / n:.0f} % of {n}" if n else "-",
                f"{self.counts[sid] / elapsed:.1f}",
                f"{p['latency_ms']['inference']:.1f}",
                f"{p['latency_ms']['end_to_publish']:.1f}",
            )  # fmt: skip
        return t


async def _watch(port: int, prefix: str, view: _View) -> None:
    async with Client("127.0.0.1", port) as client:
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
            print("note: this model is untrained; its labels are not meaningful")
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
                tg.create_task(_watch(broker.port, cfg.mqtt.prefix, view), name="demo-view"),
                *(
                    tg.create_task(
                        _publish_text(
                            broker.port, s.text_topics(cfg.mqtt.prefix, cfg.node)[0], seed_of(s.id)
                        ),
                        name=f"demo-text-{s.id}",
                    )
                    for s in cfg.streams
                ),
            ]
            if tty:
                helpers.append(tg.create_task(_live(view), name="demo-table"))
            rc = await node.run()
            for h in helpers:
                h.cancel()
        total = sum(view.counts.values())
        ok, n = view.accuracy()
        acc = f"{100 * ok / n:.1f} % of {n} windows inside one digit" if n else "no windows scored"
        print(f"live accuracy: {acc}")
        print(f"demo done: {node.published} predictions published, {total} received by the viewer")
    return rc


async def _live(view: _View) -> None:
    from rich.live import Live

    with Live(view.table(), refresh_per_second=4) as live:
        while True:
            await asyncio.sleep(0.25)
            live.update(view.table())
