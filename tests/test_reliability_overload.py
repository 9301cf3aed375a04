"""Overload: twice the streams the machine sustains. Latency stays bounded, the oldest
data is dropped and counted, RSS stays flat. ``pytest -m soak`` runs it for 10 minutes.

The assertions are the README's claims (p99 under 5 s, RSS bounded), with room for a
loaded CI machine: the second half of a 90 s run stays within 10 % of the level at
mid-run, and the soak's second half (5 minutes) has a robust (Theil-Sen) slope under 10 %
per 10 minutes, which one allocator step cannot tip as it could two medians. With glibc's
default arenas RSS crept for minutes (522 -> 543 MiB from 35 s to 155 s of one run);
``streamer run`` now caps them (``streamer.malloc``): 483-492 MiB from 30 s to 150 s.

64 paced synthetic streams (320x240 at 10 fps + 16 kHz audio) ran without a drop on the
2-core dev machine (128 windows/s, p99 end-to-publish 0.96 s); this test runs 128.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Mosquitto
from e2e_helpers import Traffic, run_node

NODE = "load"
SUSTAINED = 64  # measured on the 2-core dev machine (see the module docstring)
P99_MS = 5_000  # the README's claim: end-to-publish p99 under 5 s while overloaded
RSS_BOUND = 0.10  # and RSS bounded: the second half within 10 % of the level at mid-run
RSS_PER_10_MIN = 0.10  # the soak: a fitted slope under 10 % per 10 minutes


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def _overload(tmp_path: Path, mosquitto: Mosquitto, seconds: float) -> dict[str, Any]:
    streams = [
        {"id": f"s{i}", "video": f"synthetic:pattern?seed={i}&fps=10&size=320x240",
         "audio": f"synthetic:tone?freq={300 + 5 * i}", "text": []}
        for i in range(2 * SUSTAINED)
    ]  # fmt: skip
    cfg = {
        "node": NODE, "mqtt": {"url": mosquitto.url, "stats_interval": 2}, "streams": streams,
        "log_level": "warning",
    }  # fmt: skip
    rss: list[tuple[float, float]] = []
    async with run_node(tmp_path, cfg, mosquitto.port, stop_timeout=60) as node:
        await node.traffic.until(lambda t: t.online.is_set(), 60)
        t0 = time.monotonic()
        while (elapsed := time.monotonic() - t0) < seconds:
            rss.append((elapsed, _rss_mib(node.proc.pid)))
            await asyncio.sleep(1.0)  # the sampling period of a measurement
        assert node.proc.returncode is None, "the node died under overload"
    assert node.rc == 0, node.log.read_text()[-3000:]
    traffic, log = node.traffic, node.log
    return {"traffic": traffic, "rss": rss, "log": log.read_text()}


def _check(run: dict[str, Any], seconds: float, *, soak: bool = False) -> None:
    traffic: Traffic = run["traffic"]
    rss: list[tuple[float, float]] = run["rss"]
    last = traffic.stats[-1]["streams"]
    dropped = sum(s["dropped"] for s in last.values())
    out = sum(s["windows_out"] for s in last.values())
    assert dropped > 0, "not an overload: nothing was dropped"
    assert out > 0
    # every stream still gets predictions, with a bounded delay that does not keep growing
    assert all(traffic.predictions[f"s{i}"] for i in range(2 * SUSTAINED))
    preds = [p for ps in traffic.predictions.values() for p in ps]
    latency = sorted(p["latency_ms"]["end_to_publish"] for p in preds)
    p99 = latency[int(0.99 * (len(latency) - 1))]
    assert p99 < P99_MS, p99  # the inference queue (256 windows) bounds it
    # RSS: bounded once warm. The bounded queues, buffers and allocator arenas fill over
    # the first 30-40 s, and a minute is too short to tell that creep from a leak by a
    # slope: the run asserts a bound (the second half never above the level of mid-run
    # by more than RSS_BOUND), and the soak, whose second half is minutes long, asserts
    # the slope too. The slope is Theil-Sen's (the median of every pair's), which a leak
    # moves but one allocator step of a few MiB does not.
    half = seconds / 2
    steady = [(t, m) for t, m in rss if t >= half]
    level = statistics.median(m for t, m in rss if half - 15 <= t < half)
    peak = max(m for _, m in steady)
    slope = statistics.median(
        (m2 - m1) / (t2 - t1) for i, (t1, m1) in enumerate(steady) for t2, m2 in steady[i + 1 :]
    )
    per_10_min = slope * 600 / level
    print(f"overload: {out} windows out, {dropped} dropped, p99 {p99:.0f} ms, "
          f"RSS {level:.0f} MiB at mid-run, peak after {peak:.0f} MiB "
          f"({(peak / level - 1) * 100:+.1f} %), slope {slope * 60:+.2f} MiB/min "
          f"({per_10_min * 100:+.1f} % per 10 min)")  # fmt: skip
    print("RSS MiB by second:", [round(m) for _, m in rss])
    assert peak < level * (1 + RSS_BOUND), [(round(t), round(m)) for t, m in rss]
    if soak:
        assert per_10_min < RSS_PER_10_MIN, [(round(t), round(m)) for t, m in steady]
    assert "Traceback" not in run["log"]


async def test_overload_drops_the_oldest_and_stays_bounded(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    seconds = 90.0
    _check(await _overload(tmp_path, mosquitto, seconds), seconds)


@pytest.mark.soak
@pytest.mark.timeout(900)
async def test_soak_ten_minutes_of_overload(tmp_path: Path, mosquitto: Mosquitto) -> None:
    seconds = float(os.environ.get("STREAMER_SOAK_S", "600"))
    _check(await _overload(tmp_path, mosquitto, seconds), seconds, soak=True)
