"""``streamer bench [--json FILE] [--device cpu|cuda] [--quick]``: every figure measured in
one run on this machine, a progress line per phase, a table at the end.

Figures (JSON keys): incremental_speedup and k, overhead_ratio (the node's default
capture) and overhead_by_capture (thread and process), latency_ms {p50, p99} at 8 paced
streams, streams_realtime (and per worker count), streams_realtime_p99_100ms (1 worker,
p99 within 100 ms), streams_realtime_files (1 worker, looping files decoded by PyAV, per
capture mode), publish_per_s, device, machine; ray (--engine ray on a local two-node
cluster: latency_ms and added_latency_ms over the plain node at 8 streams,
streams_realtime beside workers_2_streams_realtime; null without Ray);
encoders (the shipped model's, per modality: items per second on one core, as run, in
torch and on onnxruntime, and the share of a window's cost); perception (the preset:
incremental_speedup, k, encoders, streams_realtime; null when its extra is missing).
Speed is reported as measured here; compare runs only on the same machine.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from streamer.bench.encoders import encoder_rates
from streamer.bench.env import machine, mosquitto
from streamer.bench.incremental import incremental_speedup
from streamer.bench.live import Trial, run_trial, streams_realtime
from streamer.bench.overhead import make_clips, overhead_ratio
from streamer.bench.publish import publish_per_s
from streamer.bench.raycluster import ray_figures, ray_installed
from streamer.config import Config, ModelConfig, WindowConfig
from streamer.errors import StreamerError
from streamer.inference.model import LoadedModel, load_model

LATENCY_STREAMS = 8
TARGETS = {
    "incremental_speedup": "≥ 0.9 × k",
    "overhead_ratio": "≤ 1.15",
    "latency_ms.p99": "≤ 50 ms",
    "streams_realtime": "≥ 16 on 2 cores",
    "streams_realtime_p99_100ms": "-",
    "streams_realtime_files": "-",
    "overhead_ratio (capture: process)": "≤ 1.15",
    "publish_per_s": "≥ 8,000",
    "perception.incremental_speedup": "≥ 0.9 × k",
    "perception.streams_realtime": "-",
    "ray.streams_realtime": "-",
    "ray.latency_ms.p99": "-",
}


def _say(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def bench_command(json_file: str | None, device: str, quick: bool) -> int:
    out = asyncio.run(bench(device, quick))
    if json_file:
        Path(json_file).write_text(json.dumps(out, indent=2) + "\n")
    return 0


async def bench(device: str, quick: bool) -> dict[str, Any]:
    t_start = time.monotonic()
    loaded = load_model(ModelConfig(device=device), WindowConfig())
    dev = loaded.device
    out: dict[str, Any] = {"device": str(dev), "machine": machine()}
    loaded.use_threads()  # model.threads, as a node runs it
    threads = f"{loaded.threads} thread{'s' if loaded.threads > 1 else ''}"
    _say(f"[1/7] incremental vs full recompute on {dev} ({loaded.precision}, {threads}) …")
    inc = incremental_speedup(
        loaded.model, dev, windows_per_stream=8 if quick else 40, repeats=1 if quick else 3,
        precision=loaded.precision,
    )  # fmt: skip
    out["incremental_speedup"], out["k"] = round(inc["incremental_speedup"], 3), inc["k"]
    _say(f"      {inc['incremental_windows_per_s']:.0f} vs {inc['full_windows_per_s']:.0f} "
         f"windows/s: ×{inc['incremental_speedup']:.2f} (k = {inc['k']:g}); fusion is "
         f"{inc['fuse_share']:.0%} of the incremental time, so a perfect cache gives "
         f"×{inc['ceiling']:.2f}")  # fmt: skip
    if "graphed_windows_per_s" in inc:
        _say(f"      with the fusion step from CUDA graphs (model.cuda_graphs): "
             f"{inc['graphed_windows_per_s']:.0f} windows/s incremental")  # fmt: skip
    _say("[2/7] the encoders: items per second on one core …")
    out["encoders"] = encoder_rates(loaded.model, inc["incremental_windows_per_s"],
                                    repeats=1 if quick else 3)  # fmt: skip
    loaded.model.to(dev)
    _say_encoders(out["encoders"])
    with mosquitto() as port:
        _say("[3/7] QoS 1 publishing to Mosquitto …")
        rate = await publish_per_s(port, n=2_000 if quick else 20_000, repeats=1 if quick else 3)
        out["publish_per_s"] = round(rate)
        _say(f"      {rate:,.0f} predictions/s")
        _say(f"[4/7] end-to-publish latency at {LATENCY_STREAMS} paced streams …")
        trial = await run_trial(port, LATENCY_STREAMS, seconds=4 if quick else 20, device=device)
        out["latency_ms"] = {"p50": round(trial.p(50), 2), "p99": round(trial.p(99), 2)}
        _say(f"      p50 {trial.p(50):.1f} ms, p99 {trial.p(99):.1f} ms "
             f"({len(trial.latencies_ms)} predictions)")  # fmt: skip
        by_workers: dict[str, int] = {}
        one_worker: dict[int, Trial] = {}  # kept for the 100 ms search

        def step(n: int, t: Trial, ok: bool) -> None:
            _say(f"      {n} streams: drops {t.drop_fraction() * 100:.2f} %, "
                 f"p99 {t.p(99):.0f} ms -> {'ok' if ok else 'too many'}")  # fmt: skip

        for workers in sorted({1, 2, int(out["machine"]["cores"])}):
            _say(f"[5/7] streams sustained in real time, {workers} worker(s) (search) …")
            by_workers[str(workers)] = await streams_realtime(
                port, seconds=3 if quick else 10, start=2 if quick else 8,
                cap=4 if quick else 512, device=device, workers=workers, progress=step,
                trials=one_worker if workers == 1 else None,
            )  # fmt: skip
        out["streams_realtime"] = max(by_workers.values())
        out["streams_realtime_by_workers"] = by_workers
        _say("      … and with p99 end-to-publish within 100 ms, 1 worker (search) …")
        out["streams_realtime_p99_100ms"] = await streams_realtime(
            port, seconds=3 if quick else 10, start=2 if quick else 8, cap=4 if quick else 512,
            device=device, progress=step, p99_ms=100.0, trials=one_worker,
        )  # fmt: skip
        out["streams_realtime_files"] = {}
        with tempfile.TemporaryDirectory(prefix="streamer-bench-") as d:
            (clip,) = make_clips(Path(d), 1, 2 if quick else 8)
            for capture in ("thread", "process"):
                _say(f"      … looping a file (PyAV), capture: {capture}, 1 worker (search) …")
                out["streams_realtime_files"][capture] = await streams_realtime(
                    port, seconds=3 if quick else 10, start=2 if quick else 8,
                    cap=4 if quick else 512, device=device, progress=step, clip=clip,
                    capture=capture,
                )  # fmt: skip
        _say("[5/7] the same on Ray (--engine ray), a local two-node cluster …")
        out["ray"] = await _ray(port, device, quick, out, step)
        _say("[6/7] pipeline overhead over decode + model, capture: thread and process …")
        out["overhead_by_capture"] = {}
        for capture in ("thread", "process"):
            with tempfile.TemporaryDirectory(prefix="streamer-bench-") as d:
                ov = await overhead_ratio(port, loaded, Path(d), clips=2 if quick else 4,
                                          segments=2 if quick else 8,
                                          repeats=1 if quick else 3, capture=capture)  # fmt: skip
            out["overhead_by_capture"][capture] = {k: round(v, 3) for k, v in ov.items()}
            _say(f"      {capture}: run {ov['run_cpu_s']:.2f} s CPU / (decode "
                 f"{ov['decode_cpu_s']:.2f} s + model {ov['model_cpu_s']:.2f} s) = "
                 f"{ov['overhead_ratio']:.2f}, each the least of its runs")  # fmt: skip
            if "overhead_ratio_same_capture" in ov:
                _say(f"      {capture}: over decoding alone in capture processes "
                     f"({ov['decode_same_capture_cpu_s']:.2f} s): "
                     f"{ov['overhead_ratio_same_capture']:.2f}")  # fmt: skip
        default = str(Config.model_fields["capture"].default)  # the node's default
        out["overhead_ratio"] = out["overhead_by_capture"][default]["overhead_ratio"]
        out["perception"] = await _perception(port, device, quick)
    _table(out)
    _say(f"done in {time.monotonic() - t_start:.0f} s")
    return out


async def _ray(
    port: int, device: str, quick: bool, out: dict[str, Any], step: Any
) -> dict[str, Any] | None:
    """``ray``: latency at 8 streams and streams_realtime on a local two-node Ray cluster,
    beside the plain node's and two workers' from this run; None (said) without Ray."""
    if not ray_installed():
        _say("      skipped: Ray is not installed (pip install 'streamer[ray]')")
        return None
    r = await ray_figures(port, device=device, quick=quick, say=_say, step=step)
    r["added_latency_ms"] = {
        k: round(r["latency_ms"][k] - out["latency_ms"][k], 2) for k in ("p50", "p99")
    }
    r["workers_2_streams_realtime"] = out["streams_realtime_by_workers"]["2"]
    return r


def _say_encoders(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        ort = r["onnxruntime_items_per_s"]
        _say(
            f"      {r['modality']} {r['name']}: {r['items_per_s']:,.0f} items/s as run "
            f"(torch {r['torch_items_per_s']:,.0f}, onnxruntime "
            f"{'-' if ort is None else f'{ort:,.0f}'}), {r['share']:.0%} of a window"
        )


async def _perception(port: int, device: str, quick: bool) -> dict[str, Any] | None:
    """The perception preset's figures; None (said) when it cannot be loaded here."""
    _say("[7/7] the perception preset: incremental, encoders, streams in real time …")
    try:
        loaded: LoadedModel = load_model(
            ModelConfig(checkpoint=Path("perception"), device=device), WindowConfig()
        )
    except StreamerError as e:
        _say(f"      skipped: {e}")
        return None
    dev = loaded.device
    loaded.use_threads()
    inc = incremental_speedup(
        loaded.model, dev, windows_per_stream=4 if quick else 40, repeats=1 if quick else 2,
        precision=loaded.precision,
    )  # fmt: skip
    _say(f"      {inc['incremental_windows_per_s']:.0f} vs {inc['full_windows_per_s']:.0f} "
         f"windows/s: ×{inc['incremental_speedup']:.2f} (k = {inc['k']:g}; a perfect cache "
         f"of these encoders: ×{inc['ceiling']:.2f})")  # fmt: skip
    rows = encoder_rates(loaded.model, inc["incremental_windows_per_s"], repeats=1 if quick else 3)
    _say_encoders(rows)

    def step(n: int, t: Trial, ok: bool) -> None:
        _say(f"      {n} streams: drops {t.drop_fraction() * 100:.2f} %, "
             f"p99 {t.p(99):.0f} ms -> {'ok' if ok else 'too many'}")  # fmt: skip

    n = await streams_realtime(
        port, seconds=3 if quick else 10, start=1 if quick else 4, cap=1 if quick else 512,
        device=device, progress=step, checkpoint="perception",
    )  # fmt: skip
    return {"incremental_speedup": round(inc["incremental_speedup"], 3), "k": inc["k"],
            "encoders": rows, "streams_realtime": n}  # fmt: skip


def _table(out: dict[str, Any]) -> None:
    t = Table(title=f"streamer bench on {out['machine']['cpu']} ({out['machine']['cores']} "
                    f"cores), device {out['device']}")  # fmt: skip
    t.add_column("figure")
    t.add_column("target")
    t.add_column("measured", justify="right")
    rows = [
        ("incremental_speedup", f"×{out['incremental_speedup']:.2f} (k = {out['k']:g})"),
        ("overhead_ratio", f"{out['overhead_ratio']:.2f}"),
        ("overhead_ratio (capture: process)", "{:.2f} ({:.2f} over decoding in processes)".format(
            out["overhead_by_capture"]["process"]["overhead_ratio"],
            out["overhead_by_capture"]["process"]["overhead_ratio_same_capture"])),
        ("latency_ms.p99", f"{out['latency_ms']['p99']:.1f} ms (p50 "
                           f"{out['latency_ms']['p50']:.1f})"),
        ("streams_realtime", ", ".join(f"{n} ({w} worker{'s' if w != '1' else ''})"
                                       for w, n in out["streams_realtime_by_workers"].items())),
        ("streams_realtime_p99_100ms", f"{out['streams_realtime_p99_100ms']} (1 worker)"),
        ("streams_realtime_files", ", ".join(f"{n} ({c})" for c, n in
                                             out["streams_realtime_files"].items())),
        ("publish_per_s", f"{out['publish_per_s']:,}"),
    ]  # fmt: skip
    if (ray := out.get("ray")) is not None:
        rows += [
            ("ray.streams_realtime", f"{ray['streams_realtime']} (2 nodes) vs "
                                     f"{ray['workers_2_streams_realtime']} (2 workers)"),
            ("ray.latency_ms.p99", f"{ray['latency_ms']['p99']:.1f} ms (p50 "
                                   f"{ray['latency_ms']['p50']:.1f}; "
                                   f"{ray['added_latency_ms']['p99']:+.1f} over the node)"),
        ]  # fmt: skip
    if (perc := out.get("perception")) is not None:
        rows += [
            ("perception.incremental_speedup",
             f"×{perc['incremental_speedup']:.2f} (k = {perc['k']:g})"),
            ("perception.streams_realtime", f"{perc['streams_realtime']} (1 worker)"),
        ]  # fmt: skip
    for name, value in rows:
        t.add_row(name, TARGETS[name], value)
    Console().print(t)
