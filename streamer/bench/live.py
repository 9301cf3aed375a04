"""Paced synthetic streams through a real ``streamer run`` (a subprocess) and a real
Mosquitto: ``latency_ms`` at 8 streams and ``streams_realtime`` found by search.

A stream is 320x240 video at 10 fps + 16 kHz audio (``synthetic:``) + one text event per
second, published over MQTT by the bench; with ``clip``, its video and audio are instead
that file, looped and paced to the wall clock (a PyAV source: decoded where ``capture``
says, in the node's threads or in capture processes). End-to-publish is arrival time minus the
window's end, stamped by ``mosquitto_sub`` (a C subscriber, its own process): a Python
subscriber sharing a busy process with the text publisher adds its own scheduling delay
(about 30 ms at p99 on a loaded 2-core box), which is not the node's. Counters come from
the node's own stats messages, as deltas after a warm-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import yaml

from streamer.mqttconn import Client

NODE = "bench"
HOP = 0.5


@dataclass
class Trial:
    streams: int
    workers: int = 1
    # (arrival, window end) in epoch seconds, as the C subscriber stamped them
    arrivals: list[tuple[float, float]] = field(default_factory=list)
    measure_from: float | None = None  # epoch s when every worker was warm
    measure_until: float = float("inf")  # epoch s when the measured interval ended
    # stats after the warm-up, and the latest, per worker process (None: a single one)
    first: dict[int | None, dict[str, Any]] = field(default_factory=dict)
    last: dict[int | None, dict[str, Any]] = field(default_factory=dict)
    online: asyncio.Event = field(default_factory=asyncio.Event)  # the node said "online"

    def _total(self, key: str, sub: str | None = None) -> float:
        def get(snap: dict[str, Any]) -> float:
            total = 0.0
            for stream in snap["streams"].values():
                v = stream[key]
                if sub is not None:
                    total += v.get(sub, 0)
                elif isinstance(v, dict):
                    total += sum(v.values())
                else:
                    total += v
            return total

        return sum(get(self.last[w]) - get(self.first[w]) for w in self.first)

    @property
    def items_in(self) -> float:
        return self._total("frames_in")

    @property
    def windows_out(self) -> float:
        return self._total("windows_out")

    def dropped(self, place: str) -> float:
        return self._total("dropped_by", place)

    def drop_fraction(self) -> float:
        items = self.dropped("source") + self.dropped("aligner")
        windows = self.dropped("inference_queue")
        return max(
            items / max(self.items_in + self.dropped("source"), 1.0),
            windows / max(self.windows_out + windows, 1.0),
        )

    @property
    def latencies_ms(self) -> list[float]:
        """End-to-publish of the predictions that arrived after the warm-up."""
        lo, hi = self.measure_from, self.measure_until
        if lo is None:
            return []
        return [(t - end) * 1000.0 for t, end in self.arrivals if lo <= t <= hi]

    def p(self, q: float) -> float:
        lat = self.latencies_ms
        return float(np.percentile(lat, q)) if lat else float("inf")


def _stream(i: int, clip: Path | None) -> dict[str, Any]:
    if clip is not None:
        url = f"file://{clip}"
        return {"id": f"s{i}", "video": url, "audio": url, "loop": True}
    return {"id": f"s{i}", "video": f"synthetic:pattern?seed={i}&fps=10&size=320x240",
            "audio": f"synthetic:tone?freq={300 + 5 * i}"}  # fmt: skip


def _config(
    port: int, n: int, device: str, checkpoint: str | None, clip: Path | None, capture: str,
    shards: int | None = None,
) -> dict[str, Any]:
    """``shards``: under --engine ray, that many shards, and a runner per shard."""
    ray = {} if shards is None else {
        "ray": {"streams_per_shard": -(-n // shards), "runners": shards}
    }  # fmt: skip
    return {
        **ray,
        "node": NODE,
        "model": {"device": device, "checkpoint": checkpoint},
        "mqtt": {"url": f"mqtt://127.0.0.1:{port}", "stats_interval": 1.0},
        "window": {"length": 2.0, "hop": HOP, "max_delay": 0.5},
        "log_level": "warning",
        "capture": capture,
        "streams": [_stream(i, clip) for i in range(n)],
    }  # fmt: skip


async def run_trial(
    port: int, n: int, *, seconds: float, warmup: float = 4.0, device: str = "auto",
    workers: int = 1, checkpoint: str | None = None, clip: Path | None = None,
    capture: str = "process", ray_address: str | None = None,
) -> Trial:  # fmt: skip
    """``n`` paced streams for ``warmup + seconds``; what the subscriber and stats saw.
    ``checkpoint``: ``model.checkpoint`` (a directory or a preset; None: the shipped one);
    ``clip``: the streams loop this file (decoded as ``capture`` says), not synthetic;
    ``ray_address``: ``--engine ray`` on that cluster, ``workers`` shards (and runners)."""
    trial = Trial(n, min(workers, n))
    shards = None if ray_address is None else trial.workers
    with tempfile.TemporaryDirectory(prefix="streamer-bench-") as d:
        cfg = Path(d) / "cfg.yaml"
        cfg.write_text(yaml.safe_dump(_config(port, n, device, checkpoint, clip, capture, shards)))
        log = Path(d) / "run.log"
        how = ["--workers", str(workers)] if ray_address is None else \
            ["--engine", "ray", "--address", ray_address]  # fmt: skip
        async with _subscriber(port, trial):
            with log.open("wb") as f:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "streamer", "run", str(cfg), *how, stdout=f, stderr=f,
                )  # fmt: skip
            try:
                await _drive(port, n, trial, warmup, seconds)
            finally:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
                try:
                    async with asyncio.timeout(60):
                        await proc.wait()
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
        if proc.returncode != 0:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"streamer run exited {proc.returncode}: {tail}")
    return trial


async def _drive(port: int, n: int, trial: Trial, warmup: float, seconds: float) -> None:
    """Publish the text events and read the node's stats for ``warmup + seconds`` from the
    node's "online"."""
    async with Client("127.0.0.1", port) as client:
        await client.subscribe(f"streamer/{NODE}/stats", qos=0)
        await client.subscribe(f"streamer/{NODE}/available", qos=1)
        stop = asyncio.Event()
        collect = asyncio.create_task(_collect(client, trial, warmup))
        texts = asyncio.create_task(_texts(client, n, stop))
        try:
            async with asyncio.timeout(60):
                await trial.online.wait()
            await asyncio.sleep(warmup + seconds)  # the measured interval itself
            trial.measure_until = time.time()
        finally:
            # Python 3.11's wait_for (inside aiomqtt's publish) could swallow a cancellation
            # that met its inner future's completion, and the sender carried on forever
            # (most likely what kept a bench waiting 20 min on a node it never stopped).
            # mqttconn.Client's waits no longer do; the sender still checks `stop`, and
            # the wait for both tasks is still bounded.
            stop.set()
            texts.cancel()
            collect.cancel()
            await asyncio.wait((texts, collect), timeout=10)
            # an overloaded box can cost the bench's own client its connection; the trial's
            # figures come from what was collected until then
            for task in (texts, collect):
                if task.done() and not task.cancelled():
                    with contextlib.suppress(aiomqtt.MqttError):
                        task.result()


async def _collect(client: aiomqtt.Client, trial: Trial, warmup: float) -> None:
    started: float | None = None
    async for msg in client.messages:
        now = time.time()
        topic = str(msg.topic)
        if topic.endswith("/available"):
            if msg.payload == b"online" and started is None:
                started = time.monotonic()
                trial.online.set()
            continue
        if started is None or time.monotonic() - started < warmup:
            continue
        body = json.loads(bytes(msg.payload))  # type: ignore[arg-type,unused-ignore]
        if topic.endswith("/stats"):
            worker = body.get("worker")
            trial.first.setdefault(worker, body)
            trial.last[worker] = body
            if trial.measure_from is None and len(trial.first) >= trial.workers:
                trial.measure_from = now  # measured once every worker is warm


@contextlib.asynccontextmanager
async def _subscriber(port: int, trial: Trial) -> AsyncIterator[None]:
    """``mosquitto_sub`` on every prediction, its lines ``arrival-epoch-s payload`` read
    into ``trial.arrivals`` until the block ends."""
    exe = shutil.which("mosquitto_sub")
    if exe is None:
        raise RuntimeError("the bench needs mosquitto_sub (apt-get install mosquitto-clients)")
    sub = await asyncio.create_subprocess_exec(
        exe, "-h", "127.0.0.1", "-p", str(port), "-q", "0", "-F", "%U %p",
        "-t", f"streamer/{NODE}/+/prediction",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert sub.stdout is not None
    stdout = sub.stdout

    async def read() -> None:
        while line := await stdout.readline():
            stamp, _, payload = line.partition(b" ")
            end = float(json.loads(payload)["window"]["end"])
            trial.arrivals.append((float(stamp), end))

    reader = asyncio.create_task(read())
    try:
        yield
    finally:
        if sub.returncode is None:
            sub.terminate()
        await sub.wait()
        await reader


async def _texts(client: aiomqtt.Client, n: int, stop: asyncio.Event) -> None:
    """One text event per second per stream, spread over the second, until ``stop``."""
    i = 0
    while not stop.is_set():
        for s in range(n):
            if stop.is_set():
                return
            await client.publish(f"streamer/{NODE}/s{s}/text", f"event {i}: it is a {i % 10}")
            await asyncio.sleep(1.0 / n)  # pacing the senders, not a synchronisation
        i += 1


def realtime(trial: Trial, p99_ms: float = 1000.0) -> bool:
    """Sustained: under 1 % of items and windows dropped, and p99 publish within
    ``p99_ms`` (1 s for ``streams_realtime``, 100 ms for ``streams_realtime_p99_100ms``)."""
    return trial.drop_fraction() < 0.01 and trial.p(99) <= p99_ms


async def streams_realtime(
    port: int, *, seconds: float = 10.0, start: int = 8, cap: int = 512,
    device: str = "auto", workers: int = 1, progress: Any = None, checkpoint: str | None = None,
    p99_ms: float = 1000.0, trials: dict[int, Trial] | None = None, clip: Path | None = None,
    capture: str = "process", ray_address: str | None = None, warmup: float = 4.0,
) -> int:  # fmt: skip
    """The most streams sustained (:func:`realtime` within ``p99_ms``): doubling from
    ``start``, then bisection to within 10 %. ``trials``: trials by stream count, run
    once and kept there, so a second search with another bound reuses the first's."""
    seen = trials if trials is not None else {}

    async def good(n: int) -> bool:
        if n not in seen:
            seen[n] = await run_trial(
                port, n, seconds=seconds, device=device, workers=workers,
                checkpoint=checkpoint, clip=clip, capture=capture, ray_address=ray_address,
                warmup=warmup,
            )  # fmt: skip
        ok = realtime(seen[n], p99_ms)
        if progress is not None:
            progress(n, seen[n], ok)
        return ok

    ok, bad = 0, None
    n = start
    while n <= cap:
        if not await good(n):
            bad = n
            break
        ok, n = n, n * 2
    if bad is None:
        return ok
    while bad - ok > max(1, ok // 10):
        mid = (ok + bad) // 2
        ok, bad = (mid, bad) if await good(mid) else (ok, mid)
    return ok
