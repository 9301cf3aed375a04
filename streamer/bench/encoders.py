"""``encoders``: each encoder a model uses, in items per second on one core: as the node
runs it (``items_per_s``), in eager torch, and on onnxruntime where its graph exports
(the whole encoder graph, as ``model.runtime: onnx`` runs it), and its share of a
window's cost.

An item is what the runtime encodes once and caches: a frame, a 0.25 s audio segment, a
text event; they are timed in batches of ``batch`` (as the runner batches streams), on
one intra-op thread. A window that slides by ``hop`` brings ``fps * hop`` new frames,
``hop / segment`` new segments and (as the incremental phase's inputs) ``hop`` text
events; their encoding time over the window's measured cost (one over the incremental
phase's windows per second) is the encoder's share.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.encoders.frozen import FrozenEncoder
from models.encoders.ort_backbone import OrtBackbone
from models.export import ExportError, example_inputs, export_graph
from models.fusion import FusionModel

MODALITIES = ("video", "audio", "text")


def _best_rate(run: Callable[[], object], items: int, repeats: int) -> float:
    run()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return items / best


def _inputs(model: FusionModel, modality: str, batch: int) -> tuple[torch.Tensor, ...]:
    base = example_inputs(model.spec)[f"{modality}_encoder"]
    if modality == "text":
        ids, _ = base
        return ids[:1].repeat(batch, 1), torch.full((batch,), ids.shape[1], dtype=torch.int64)
    return (base[0][:1].repeat(batch, *([1] * (base[0].dim() - 1))),)


def _onnx_rate(
    model: FusionModel, modality: str, inputs: tuple[torch.Tensor, ...], repeats: int
) -> float | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    with tempfile.TemporaryDirectory(prefix="streamer-bench-") as d:
        try:
            path = export_graph(model, f"{modality}_encoder", Path(d) / "graph.onnx")
        except ExportError:
            return None  # the encoder runs outside torch
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {i.name: x.numpy() for i, x in zip(sess.get_inputs(), inputs, strict=True)}
    return _best_rate(lambda: sess.run(None, feed), len(inputs[0]), repeats)


def encoder_rates(
    model: FusionModel, windows_per_s: float, *, hop: float = 0.5, batch: int = 8,
    repeats: int = 3, onnx: bool = True,
) -> list[dict[str, Any]]:  # fmt: skip
    """One row per modality: its encoder's name and rates, and share of a window's cost
    at ``windows_per_s`` (the incremental runtime's, same model, same thread count)."""
    spec = model.spec
    model = model.cpu().eval()
    new_items = {"video": spec.fps * hop, "audio": hop / spec.audio_segment, "text": hop}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []
    try:
        for modality in MODALITIES:
            enc = model.encoder(modality)
            name = enc.provenance.name if isinstance(enc, FrozenEncoder) else "builtin"
            inputs = _inputs(model, modality, batch)
            hook = getattr(model, f"encode_{modality}")
            backbone = enc.backbone if isinstance(enc, FrozenEncoder) else None
            with torch.inference_mode():
                rate = _best_rate(lambda: hook(*inputs), batch, repeats)  # noqa: B023
                if isinstance(backbone, OrtBackbone):  # the node's rate was onnxruntime's
                    backbone.use_onnxruntime = False
                    try:
                        torch_rate = _best_rate(lambda: hook(*inputs), batch, repeats)  # noqa: B023
                    finally:
                        backbone.use_onnxruntime = True
                else:
                    torch_rate = rate
            ort_rate = _onnx_rate(model, modality, inputs, repeats) if onnx else None
            per_window_s = new_items[modality] / rate
            rows.append({
                "modality": modality, "name": name, "items_per_s": round(rate, 1),
                "torch_items_per_s": round(torch_rate, 1),
                "onnxruntime_items_per_s": None if ort_rate is None else round(ort_rate, 1),
                "share": round(float(np.clip(per_window_s * windows_per_s, 0, 1)), 3),
            })  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    return rows
