"""The runner batches windows across streams, runs the model off the event loop, and the
prediction builder numbers them without gaps; the bounded queue drops its oldest."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Sequence
from typing import Any

import jsonschema
import numpy as np
import pytest
import torch

from models.fusion import FusionModel
from models.incremental import IncrementalFusion, WindowInputs
from models.spec import ModelSpec
from streamer.config import ModelConfig, WindowConfig
from streamer.errors import ConfigError
from streamer.frames import NS, TextEvent, VideoFrame, Window
from streamer.inference.model import load_model, resolve_precision
from streamer.inference.runner import InferenceRunner, Result, window_inputs
from streamer.predictions import ModelId, PredictionBuilder
from streamer.queues import DropQueue
from streamer.sinks.mqtt_sink import LabelChanges

SPEC = ModelSpec()
T0 = 1_764_160_000 * NS


def make_window(stream: str, start_ns: int, *, video: bool = True, audio: bool = True) -> Window:
    rng = np.random.default_rng(start_ns % 1000)
    slots = 8
    frames = tuple(
        VideoFrame(stream, start_ns + i * NS // 4, rng.integers(0, 255, (64, 64, 3), np.uint8))
        if video
        else None
        for i in range(slots)
    )
    n = 2 * SPEC.audio_rate
    samples = rng.standard_normal(n).astype(np.float32) * 0.1 if audio else np.zeros(n, np.float32)
    mask = np.full(n, audio)
    texts = (TextEvent(stream, start_ns + NS, "seven"),)
    return Window(
        stream, start_ns, start_ns + 2 * NS, frames, samples, mask, SPEC.audio_rate, texts,
        {"video": video, "audio": audio, "text": True},
    )  # fmt: skip


class RecordingFusion(IncrementalFusion):
    def __init__(self, model: FusionModel) -> None:
        super().__init__(model)
        self.threads: list[str] = []
        self.calls: list[list[str]] = []

    def infer(self, windows: Sequence[WindowInputs]) -> tuple[torch.Tensor, Any]:
        self.threads.append(threading.current_thread().name)
        self.calls.append([str(w.session) for w in windows])
        return super().infer(windows)


@pytest.fixture(scope="module")
def model() -> FusionModel:
    torch.manual_seed(0)
    return FusionModel(SPEC).eval()


async def test_batches_across_streams_off_the_loop(model: FusionModel) -> None:
    fusion = RecordingFusion(model)
    results: list[Result] = []

    async def on_result(r: Result) -> None:
        results.append(r)

    cfg = ModelConfig(max_batch=8, max_wait_ms=200)
    async with InferenceRunner(fusion, SPEC, cfg, on_result, device=torch.device("cpu")) as r:
        for s in ("a", "b", "c"):
            r.submit_nowait(make_window(s, T0))
        await r.drain()
    assert fusion.calls == [["a", "b", "c"]]  # one model call for the three streams
    assert fusion.threads[0] != threading.current_thread().name
    assert fusion.threads[0].startswith("infer-cpu")
    assert [x.window.stream for x in results] == ["a", "b", "c"]
    for x in results:
        assert x.probs.shape == (10,) and abs(float(x.probs.sum()) - 1) < 1e-5
        assert x.inference_ms > 0


async def test_max_batch_splits_and_order_is_kept(model: FusionModel) -> None:
    fusion = RecordingFusion(model)
    seen: list[int] = []

    async def on_result(r: Result) -> None:
        seen.append(r.window.start_ns)

    cfg = ModelConfig(max_batch=2, max_wait_ms=0)
    async with InferenceRunner(fusion, SPEC, cfg, on_result, device=torch.device("cpu")) as r:
        starts = [T0 + i * NS // 2 for i in range(5)]
        for s in starts:
            await r.submit(make_window("a", s))
        await r.drain()
    assert seen == starts
    assert all(len(c) <= 2 for c in fusion.calls)


async def test_full_queue_drops_oldest_and_reports_it(model: FusionModel) -> None:
    dropped: list[tuple[Window, str]] = []

    async def on_result(r: Result) -> None:
        pass

    runner = InferenceRunner(
        IncrementalFusion(model), SPEC, ModelConfig(), on_result,
        device=torch.device("cpu"), queue_size=2, on_drop=lambda w, p: dropped.append((w, p)),
    )  # fmt: skip
    # not started: nothing consumes, so the third window pushes out the first
    w = [make_window("a", T0 + i * NS // 2) for i in range(3)]
    for x in w:
        runner.submit_nowait(x)
    assert dropped == [(w[0], "inference_queue")]
    assert runner.queue.dropped == 1 and len(runner.queue) == 2


class PoisonFusion(RecordingFusion):
    """Fails every call that holds a window of stream ``poison``, as a tokenizer that
    cannot take an item would."""

    def infer(self, windows: Sequence[WindowInputs]) -> tuple[torch.Tensor, Any]:
        if any(w.session == "poison" for w in windows):
            self.calls.append([str(w.session) for w in windows])
            raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")
        return super().infer(windows)


async def test_a_failing_window_costs_only_itself(model: FusionModel) -> None:
    fusion = PoisonFusion(model)
    results: list[str] = []
    lost: list[tuple[str, str]] = []

    async def on_result(r: Result) -> None:
        results.append(r.window.stream)

    cfg = ModelConfig(max_batch=8, max_wait_ms=200)
    async with InferenceRunner(
        fusion, SPEC, cfg, on_result, device=torch.device("cpu"),
        on_drop=lambda w, place: lost.append((w.stream, place)),
    ) as r:  # fmt: skip
        for s in ("a", "poison", "b"):
            r.submit_nowait(make_window(s, T0))
        await r.drain()
    assert fusion.calls[0] == ["a", "poison", "b"]  # the batch failed, then one by one
    assert sorted(results) == ["a", "b"]
    assert lost == [("poison", "inference_error")] and r.lost["inference_error"] == 1


async def test_a_raising_result_callback_loses_that_result_alone(model: FusionModel) -> None:
    delivered: list[str] = []
    lost: list[tuple[str, str]] = []

    async def on_result(r: Result) -> None:
        if r.window.stream == "bad":
            raise ValueError("a bug in the sink")
        delivered.append(r.window.stream)

    cfg = ModelConfig(max_batch=4, max_wait_ms=0)
    async with InferenceRunner(
        IncrementalFusion(model), SPEC, cfg, on_result, device=torch.device("cpu"),
        on_drop=lambda w, place: lost.append((w.stream, place)),
    ) as r:  # fmt: skip
        for i, s in enumerate(["a", "bad", "b", "bad", "c"]):
            await r.submit(make_window(s, T0 + i * NS // 2))
        async with asyncio.timeout(30):  # the batcher lives on: drain() returns
            await r.drain()
        await r.submit(make_window("d", T0 + 3 * NS))
        async with asyncio.timeout(30):
            await r.drain()
    assert delivered == ["a", "b", "c", "d"]
    assert lost == [("bad", "result_error")] * 2


async def test_the_runner_exit_does_not_swallow_the_callers_cancellation(
    model: FusionModel,
) -> None:
    """The owner is cancelled while the runner's exit waits for the batcher to wind down
    (a result callback still cleaning up): the cancellation must reach the owner."""
    entered, winding_down, release = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def on_result(r: Result) -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            winding_down.set()
            await release.wait()
            raise

    async def owner() -> None:
        cfg = ModelConfig(max_batch=1, max_wait_ms=0)
        async with InferenceRunner(
            IncrementalFusion(model), SPEC, cfg, on_result, device=torch.device("cpu")
        ) as r:
            r.submit_nowait(make_window("a", T0))
            await entered.wait()
        # leaving the block: __aexit__ cancels the batcher and waits for it

    task = asyncio.create_task(owner())
    async with asyncio.timeout(30):
        await winding_down.wait()
    task.cancel()  # the owner is cancelled inside the runner's __aexit__
    release.set()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(30):
            await task
    assert task.cancelled()


def test_window_inputs_keys_are_absolute_times() -> None:
    a = window_inputs(make_window("a", T0), SPEC)
    b = window_inputs(make_window("a", T0 + NS // 2), SPEC)
    assert len(a.video) == 8 and len(a.audio) == 8
    # the overlapping part of two windows has the same keys, so the cache hits
    keys_a = {v[0] for v in a.audio if v is not None}
    keys_b = {v[0] for v in b.audio if v is not None}
    assert len(keys_a & keys_b) == 6
    none = window_inputs(make_window("a", T0, video=False, audio=False), SPEC)
    assert all(v is None for v in none.video) and all(x is None for x in none.audio)
    assert none.text[0][2] == pytest.approx(1.0)  # offset in seconds from the window start


def test_predictions_number_without_gaps_and_validate(
    prediction_schema: dict[str, Any],
) -> None:
    b = PredictionBuilder("n1", "r" * 32, ModelId("m", "sha256:x", SPEC.labels))
    probs = np.full(10, 0.05, np.float32)
    probs[7] = 0.55
    out = []
    for i in range(4):
        for s in ("a", "b"):
            p = b.build(make_window(s, T0 + i * NS // 2), probs, inference_ms=1.0,
                        now_ns=T0 + i * NS // 2 + 2 * NS + 5_000_000)  # fmt: skip
            out.append(p.to_json())
    for p in out:
        jsonschema.validate(p, prediction_schema)
    assert [p["seq"] for p in out if p["stream"] == "a"] == [0, 1, 2, 3]
    assert [p["seq"] for p in out if p["stream"] == "b"] == [0, 1, 2, 3]
    assert out[0]["label"] == "7" and out[0]["latency_ms"]["end_to_publish"] == 5.0
    labels = LabelChanges()  # the MQTT sink's P/N/S/label goes out when it changes
    assert labels.changed("a", "7") and not labels.changed("a", "7")
    assert labels.changed("a", "3") and labels.changed("b", "7")


def test_a_lost_window_is_a_gap_in_seq() -> None:
    b = PredictionBuilder("n1", "r" * 32, ModelId("m", "sha256:x", SPEC.labels))
    probs = np.full(10, 0.1, np.float32)
    seqs = []
    for i in range(4):
        w = make_window("a", T0 + i * NS // 2)
        if i == 1:
            b.skip("a")
            continue
        seqs.append(b.build(w, probs, inference_ms=1.0, now_ns=w.end_ns).seq)
    assert seqs == [0, 2, 3] and b.skipped("a") == 1 and b.counts() == {"a": 4}


def test_a_cut_window_is_partial_and_measured_from_its_cut(
    prediction_schema: dict[str, Any],
) -> None:
    b = PredictionBuilder("n1", "r" * 32, ModelId("m", "sha256:x", SPEC.labels))
    probs = np.full(10, 0.1, np.float32)
    whole = make_window("a", T0)
    cut = dataclasses.replace(whole, cut_ns=T0 + NS)  # stopped 1 s into the window
    p = b.build(cut, probs, inference_ms=1.0, now_ns=T0 + NS + 20_000_000).to_json()
    jsonschema.validate(p, prediction_schema)
    assert p["partial"] is True and p["latency_ms"]["end_to_publish"] == 20.0
    q = b.build(whole, probs, inference_ms=1.0, now_ns=T0 + 2 * NS + 7_000_000).to_json()
    assert "partial" not in q and q["latency_ms"]["end_to_publish"] == 7.0


async def test_drop_queue() -> None:
    q: DropQueue[int] = DropQueue(2)
    assert q.put_nowait(1) is None and q.put_nowait(2) is None
    assert q.put_nowait(3) == 1 and q.dropped == 1
    waiter = asyncio.create_task(q.put(4))  # backpressure: waits for room
    await asyncio.sleep(0)
    assert not waiter.done()
    assert await q.get() == 2
    await asyncio.wait_for(waiter, 1)
    assert [q.get_nowait(), q.get_nowait()] == [3, 4]
    with pytest.raises(ValueError):
        DropQueue(0)


def test_precision_resolves_per_device() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32"  # autocast seldom pays on a CPU
    assert resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ConfigError, match="model.precision"):
        resolve_precision("fp16", cpu)  # device auto found no GPU
    loaded = load_model(ModelConfig(device="cpu", precision="bf16"), WindowConfig())
    fusion = loaded.make_fusion()
    assert isinstance(fusion, IncrementalFusion) and fusion.precision == "bf16"


def test_model_threads_reach_the_runtime() -> None:
    before = torch.get_num_threads()
    try:
        loaded = load_model(ModelConfig(device="cpu"), WindowConfig())
        assert loaded.threads == 1  # auto
        torch.set_num_threads(2)
        loaded.make_fusion()
        assert torch.get_num_threads() == 1
        loaded = load_model(ModelConfig(device="cpu", threads=2), WindowConfig())
        loaded.make_fusion()
        assert loaded.threads == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_cuda_graphs_reach_the_runtime_on_cuda_and_are_off_without(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loaded = load_model(ModelConfig(cuda_graphs=True), WindowConfig())  # device auto
    fusion = loaded.make_fusion()
    assert isinstance(fusion, IncrementalFusion)
    if loaded.device.type == "cuda":
        assert loaded.cuda_graphs and fusion.graphed is not None
    else:  # asked for, but no CUDA device here: the eager step, and a warning that says so
        assert not loaded.cuda_graphs and fusion.graphed is None
        assert "model.cuda_graphs: no CUDA device" in caplog.text
    plain = load_model(ModelConfig(), WindowConfig()).make_fusion()  # off by default
    assert isinstance(plain, IncrementalFusion) and plain.graphed is None


async def test_an_ended_stream_s_cache_goes_once_its_last_window_is_inferred(
    model: FusionModel,
) -> None:
    fusion = IncrementalFusion(model)
    seen: list[str] = []

    async def on_result(r: Result) -> None:
        seen.append(r.window.stream)

    cfg = ModelConfig(max_batch=1, max_wait_ms=0)
    async with InferenceRunner(fusion, SPEC, cfg, on_result, device=torch.device("cpu")) as r:
        r.submit_nowait(make_window("a", T0))
        r.submit_nowait(make_window("ended", T0))
        r.submit_nowait(make_window("ended", T0 + NS // 2))
        r.forget("ended")  # two of its windows still queued: they are inferred first
        await r.drain()
        r.forget("idle")  # never seen: nothing to drop, nothing breaks
        # the drop runs on the model thread: wait for what is queued there before leaving
        await asyncio.get_running_loop().run_in_executor(r._executor, lambda: None)
    assert seen == ["a", "ended", "ended"]
    assert fusion.cache_size("ended") == 0 and fusion.cache_size("a") > 0
    assert fusion.session_count == 1
