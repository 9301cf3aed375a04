"""``streamer run --engine ray`` on a real multi-node Ray cluster on this machine, with a
real Mosquitto: placement by labels, a node SIGKILLed (its raylet), a pinned stream that
waits for its host, and a persistent subscriber that accounts for every window."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import jsonschema
import pytest
from conftest import Mosquitto, free_port
from e2e_helpers import write_config
from media import make_clip
from ray_helpers import (
    HOST,
    Seen,
    controller_running,
    kill_raylet,
    ray_cluster,
    require_ray,
    subscribe,
)

from streamer.contract import gap_schema

NODE = "site"
BASE = f"streamer/{NODE}"
HOP = 0.5
pytestmark = pytest.mark.timeout(300)


def account(seen: Seen, stream: str) -> list[str]:
    """Every window of ``stream`` accounted for: within a run, ``seq`` 0, 1, 2, ... with
    starts a hop apart; between two runs, one gap marker that joins them exactly; no two
    different payloads for one ``(run, stream, seq)``. Returns the runs in order."""
    runs = seen.runs(stream)
    by_run = {r: sorted({p["seq"]: p for p in seen.predictions[stream] if p["run"] == r}.values(),
                        key=lambda p: p["seq"]) for r in runs}  # fmt: skip
    for r, ps in by_run.items():
        assert [p["seq"] for p in ps] == list(range(len(ps))), f"{stream} run {r}: seq gap"
        for p in ps:
            payloads = seen.raw[(r, stream, p["seq"])]
            assert len(payloads) == 1, f"{stream} {r} {p['seq']}: two payloads"
    gaps = seen.gaps[stream]
    assert len(gaps) == len(runs) - 1, f"{stream}: runs {runs}, gap markers {gaps}"
    for g in gaps:
        jsonschema.validate(g, gap_schema())
    for old, new, g in zip(runs, runs[1:], gaps, strict=False):
        last, first = by_run[old][-1], by_run[new][0]
        assert (g["prev"]["run"], g["run"]) == (old, new)
        assert g["prev"]["seq"] == last["seq"] and g["seq"] == first["seq"] == 0
        assert g["from"] == pytest.approx(last["window"]["start"] + HOP)
        assert g["to"] == pytest.approx(first["window"]["start"])
        assert g["windows"] == max(0, round((g["to"] - g["from"]) / HOP))
    return runs


async def test_streams_placed_failed_over_and_accounted_for(
    tmp_path: Path, mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch,
    prediction_schema: dict[str, Any],
) -> None:
    require_ray()
    clip = make_clip(tmp_path / "clip.mp4", 4.0, audio=True)
    syn = "synthetic:pattern?seed={}&fps=10&size=160x120"
    streams: list[dict[str, Any]] = [
        {"id": "syn1", "video": syn.format(1)},
        {"id": "syn2", "video": syn.format(2)},
        {"id": "file1", "video": f"file://{clip}", "audio": f"file://{clip}", "loop": True},
        {"id": "cam_b", "video": syn.format(3), "host": "b"},  # pinned: waits for host b
        {"id": "cam_a", "video": syn.format(4), "host": "a"},  # pinned: host a joins later
    ]
    cfg = write_config(tmp_path / "cfg.yaml", {
        "node": NODE, "mqtt": {"url": mosquitto.url, "stats_interval": 2.0},
        "window": {"length": 1.0, "hop": HOP, "max_delay": 0.5},
        "streams": streams,
        "ray": {"streams_per_shard": 1, "runner_host": "head", "check_interval": 0.5},
        "http": {"listen": f"127.0.0.1:{(port := free_port())}"},  # the controller's /metrics
    })  # fmt: skip
    seen = Seen()
    with ray_cluster(monkeypatch) as cluster:
        # the head holds the runner; b (4 CPUs) every shard that may run anywhere.
        # (add_node on the main thread only: it sets signal handlers)
        node_b = cluster.add_node(num_cpus=4, labels={HOST: "b"})
        async with controller_running(cfg, cluster.address, mosquitto.port, BASE, seen,
                                      tmp_path / "controller.log") as c:  # fmt: skip
            await _scenario(cluster, node_b, seen)
            metrics = await _metrics(port)
    assert c.rc == 0, c.tail()
    for s in ("syn1", "syn2", "file1", "cam_b"):
        assert len(account(seen, s)) == 2, s  # one failover each: two runs, one marker
    assert len(account(seen, "cam_a")) == 1  # never moved
    assert seen.available[0] == "online" and seen.available[-1] == "stopped"
    assert "offline" not in seen.available  # the controller never went away
    for ps in seen.predictions.values():
        for p in ps:
            jsonschema.validate(p, prediction_schema)
    assert "streamer_failovers_total 4.0" in metrics  # 3 moved, 1 waited
    for s in ("syn1", "syn2", "file1", "cam_b", "cam_a"):  # as each shard last reported
        m = re.search(rf'^streamer_windows_out_total{{shard="\d+",stream="{s}"}} (\S+)$', metrics,
                      re.MULTILINE)  # fmt: skip
        assert m is not None and float(m[1]) > 0, metrics
    up = [line for line in metrics.splitlines() if line.startswith("streamer_shard_up{")]
    assert len(up) == 5 and all(line.endswith(" 1.0") for line in up), up


async def _metrics(port: int) -> str:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
            assert r.status == 200
            return await r.text()


async def _refused_without_the_token(address: str) -> None:
    """Token authentication is on: a driver with another token is turned away."""
    env = {**os.environ, "RAY_AUTH_TOKEN": "0" * 32}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", f"import ray; ray.init(address={address!r})", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode != 0 and b"Authentication" in err, err[-2000:]


async def _scenario(cluster: Any, node_b: Any, seen: Seen) -> None:
    await _refused_without_the_token(cluster.address)
    b_id = node_b.node_id
    unpinned = ("syn1", "syn2", "file1")
    # placement: everything that may run anywhere on b (the head's CPU is the runner's),
    # cam_b on b; cam_a waits for a host labelled a
    await seen.until("first predictions", lambda: all(
        seen.predictions[s] for s in (*unpinned, "cam_b")), 90)  # fmt: skip
    await seen.until("shards reported", lambda: all(
        seen.shard_of(s).get("state") == "running" for s in (*unpinned, "cam_b")), 30)  # fmt: skip
    for s in (*unpinned, "cam_b"):
        assert seen.shard_of(s)["node_id"] == b_id, s
    await seen.until("stats from each shard", lambda: len(seen.stats) >= 4, 10)
    for st in seen.stats.values():  # each shard's own stats say where it runs
        assert st["ray_node"] == b_id and st["host"] == "b" and st["node"] == NODE
    assert seen.shard_of("cam_b")["host"] == "b"
    assert not seen.predictions["cam_a"] and seen.shard_of("cam_a")["state"] == "starting"

    t_join = time.monotonic()
    node_a = cluster.add_node(num_cpus=4, labels={HOST: "a"})
    await seen.until("cam_a runs once a joined", lambda: bool(seen.predictions["cam_a"]),
                     15 + (time.monotonic() - t_join))  # fmt: skip
    await seen.until("cam_a placed", lambda: seen.shard_of("cam_a").get("host") == "a", 10)
    assert seen.shard_of("cam_a")["node_id"] == node_a.node_id

    # node b dies: its free streams come back from a within 15 s; cam_b waits
    before = {s: seen.runs(s)[0] for s in (*unpinned, "cam_b")}
    kill_raylet(node_b)
    t_kill = time.monotonic()
    for s in unpinned:
        await seen.until(f"{s} predicts again", lambda s=s: len(seen.runs(s)) == 2,
                         15 - (time.monotonic() - t_kill))  # fmt: skip
    moved = time.monotonic() - t_kill
    for s in unpinned:  # P/N/shards follows within a check or two of the new run
        reported = lambda s=s: seen.shard_of(s).get("run") == seen.runs(s)[1]  # noqa: E731
        await seen.until(f"{s}'s new run in P/N/shards", reported, 10)
        assert seen.shard_of(s)["node_id"] == node_a.node_id
        assert seen.runs(s)[0] == before[s]
    assert seen.runs("cam_b") == [before["cam_b"]]  # waiting for its host
    assert seen.shard_of("cam_b")["state"] == "lost"

    t_back = time.monotonic()
    node_b2 = cluster.add_node(num_cpus=2, labels={HOST: "b"})
    await seen.until("cam_b back on the new b", lambda: len(seen.runs("cam_b")) == 2,
                     15 + (time.monotonic() - t_back))  # fmt: skip
    await seen.until("cam_b's new run in P/N/shards",
                     lambda: seen.shard_of("cam_b").get("run") == seen.runs("cam_b")[1], 10)
    assert seen.shard_of("cam_b")["node_id"] == node_b2.node_id
    print(f"moved within {moved:.1f} s; cam_b back {time.monotonic() - t_back:.1f} s after b2 was "
          "asked for")
    # a few windows more under the new runs, and every gap marker in
    await seen.until("markers", lambda: all(len(seen.gaps[s]) == 1
                                            for s in (*unpinned, "cam_b")), 15)  # fmt: skip
    n = {s: len(seen.predictions[s]) for s in seen.predictions}
    await seen.until("more windows", lambda: all(len(seen.predictions[s]) >= n[s] + 2
                                                 for s in n), 20)  # fmt: skip


async def test_a_ray_of_its_own_runs_a_config_to_its_end(
    tmp_path: Path, mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch,
    prediction_schema: dict[str, Any],
) -> None:
    """No --address: the controller starts a one-machine Ray (token auth on), and the run
    ends by itself, exit 0, once every file has been read, as a node's does."""
    from e2e_helpers import check_predictions

    require_ray()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    clip = make_clip(tmp_path / "clip.mp4", 3.0, audio=True)
    streams = [{"id": f"f{i}", "video": f"file://{clip}", "audio": f"file://{clip}",
                "realtime": False} for i in range(3)]  # fmt: skip
    cfg = write_config(tmp_path / "cfg.yaml", {
        "node": NODE, "mqtt": {"url": mosquitto.url}, "streams": streams,
        "ray": {"streams_per_shard": 2},
    })  # fmt: skip
    seen = Seen()
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
        sub = asyncio.create_task(subscribe(client, seen, BASE))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "streamer", "run", str(cfg), "--engine", "ray",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(proc.communicate(), 180)
        assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
        await seen.until("available stopped", lambda: "stopped" in seen.available, 20)
        sub.cancel()
    for s in ("f0", "f1", "f2"):
        check_predictions(seen.predictions[s], prediction_schema, hop=0.5, length=2.0)
    assert seen.predictions["f0"][0]["run"] == seen.predictions["f1"][0]["run"]  # one shard
    assert seen.predictions["f2"][0]["run"] != seen.predictions["f0"][0]["run"]
    assert not seen.gaps
    assert [s["state"] for s in seen.shards["shards"]] == ["ended", "ended"]


async def test_a_runner_that_dies_costs_its_windows_counted_and_comes_back(
    tmp_path: Path, mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner's node dies: the shards live on under their runs; the windows it held
    are lost, each a gap in seq and counted in the stats (dropped_by); the calls made
    while Ray restarts it (on the node with its label that joins) wait for it, and
    predictions go on (its cache is empty: the shard sends the windows whole again)."""
    require_ray()
    syn = "synthetic:pattern?seed={}&fps=10&size=160x120"
    cfg = write_config(tmp_path / "cfg.yaml", {
        "node": NODE, "mqtt": {"url": mosquitto.url, "stats_interval": 1.0},
        "window": {"length": 1.0, "hop": HOP, "max_delay": 0.5},
        "streams": [{"id": f"s{i}", "video": syn.format(i)} for i in range(2)],
        "ray": {"streams_per_shard": 2, "runner_host": "gpu", "check_interval": 0.5},
    })  # fmt: skip
    seen = Seen()
    with ray_cluster(monkeypatch, head_cpus=2) as cluster:  # the shard on the head
        gpu = cluster.add_node(num_cpus=1, labels={HOST: "gpu"})
        async with controller_running(cfg, cluster.address, mosquitto.port, BASE, seen,
                                      tmp_path / "controller.log") as c:  # fmt: skip
            await seen.until("predictions", lambda: all(
                len(seen.predictions[s]) >= 3 for s in ("s0", "s1")), 90)  # fmt: skip
            kill_raylet(gpu)
            n = {s: len(seen.predictions[s]) for s in ("s0", "s1")}
            t_back = time.monotonic()
            cluster.add_node(num_cpus=1, labels={HOST: "gpu"})
            await seen.until("predictions after the runner's return", lambda: all(
                len(seen.predictions[s]) >= n[s] + 4 for s in n),
                30 + (time.monotonic() - t_back))  # fmt: skip
            lost = _seq_gaps(seen)
            await seen.until("the losses in the stats", lambda: _counted(seen) >= lost, 10)
    assert c.rc == 0, c.tail()
    assert all(len(seen.runs(s)) == 1 for s in ("s0", "s1"))  # the shard never moved
    assert not seen.gaps
    print(f"windows lost while the runner was away: {lost}")
    assert lost > 0  # the windows of the outage, each a gap in seq ...
    assert _counted(seen) == lost  # ... and each counted where it was lost


def _seq_gaps(seen: Seen) -> int:
    """Windows missing from each stream's seq (one run each here)."""
    total = 0
    for ps in seen.predictions.values():
        seqs = sorted({p["seq"] for p in ps})
        total += seqs[-1] + 1 - len(seqs)
    return total


def _counted(seen: Seen) -> int:
    """Windows the shard says it lost after alignment (its latest stats)."""
    return sum(
        body["dropped_by"].get(place, 0)
        for st in seen.stats.values() for body in st["streams"].values()
        for place in ("inference_queue", "inference_error")
    )  # fmt: skip
