"""``incremental_speedup``: windows per second with the cached incremental runtime over a
full recompute of every window, on the same inputs, in the same batches.

S streams slide a window of ``length`` seconds by ``hop``, and each call takes one window
of every stream (S = 8, as the runner batches 8 live streams). At S = 16 the incremental
path gains ~15 %, but the full recompute's large activations then page-fault on every
call in some processes and not others (glibc hands large freed blocks back to the
system: 1.26 million minor faults in one fresh process's phase, 16 thousand with its mmap
and trim thresholds raised), and the ratio read x2.9-x4.6 from one build.

Window w of a stream holds the video slots and audio segments from ``w * hop`` on, with
keys that repeat across windows as they would live, so the incremental runtime encodes
each item once while the full recompute encodes it ``k = length / hop`` times. One text
event per second.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from models.fusion import Encoded, FusionModel
from models.incremental import PRECISIONS, IncrementalFusion
from models.spec import ModelSpec
from models.windows import WindowInputs, collate


def sliding_windows(
    spec: ModelSpec, length: float, hop: float, streams: int, per_stream: int, seed: int = 0
) -> list[list[WindowInputs]]:
    """Batches of windows (one per stream), in time order."""
    rng = np.random.default_rng(seed)
    tv, ta = round(length * spec.fps), round(length / spec.audio_segment)
    hv, ha = round(hop * spec.fps), round(hop / spec.audio_segment)
    n_v, n_a = hv * (per_stream - 1) + tv, ha * (per_stream - 1) + ta
    size, seg = spec.image_size, spec.segment_samples
    frames = rng.integers(0, 256, (streams, n_v, size, size, 3), dtype=np.uint8)
    audio = (0.1 * rng.standard_normal((streams, n_a, seg))).astype(np.float32)
    batches = []
    for w in range(per_stream):
        batch = []
        for s in range(streams):
            t0 = w * hop
            text = [
                (e, f"event {e}: it is a {e % 10}", float(e - t0))
                for e in range(int(t0), int(t0 + length) + 1)
                if t0 <= e < t0 + length
            ]
            batch.append(
                WindowInputs(
                    session=s,
                    video=[(i, frames[s, i]) for i in range(w * hv, w * hv + tv)],
                    audio=[(j, audio[s, j]) for j in range(w * ha, w * ha + ta)],
                    text=text,
                )
            )
        batches.append(batch)
    return batches


Batches = list[list[WindowInputs]]


def _rate(run: Callable[[Sequence[WindowInputs]], object], batches: Batches) -> float:
    t0 = time.perf_counter()
    n = 0
    for b in batches:
        run(b)
        n += len(b)
    return n / (time.perf_counter() - t0)


class _TimedFusion(IncrementalFusion):
    """IncrementalFusion that adds up the wall time of its fusion step."""

    fuse_s = 0.0

    def _fuse(self, enc: Encoded) -> torch.Tensor:
        t0 = time.perf_counter()
        out = super()._fuse(enc)
        self.fuse_s += time.perf_counter() - t0
        return out


@torch.inference_mode()
def incremental_speedup(
    model: FusionModel, device: torch.device, *, length: float = 2.0, hop: float = 0.5,
    windows_per_stream: int = 40, repeats: int = 3, precision: str = "fp32", streams: int = 8,
) -> dict[str, float]:  # fmt: skip
    """The best of ``repeats`` interleaved runs of each. ``ceiling``: the speedup a perfect
    encoder cache (encoder work / k, nothing else) would give with this model's fusion
    step, which no cache saves: every window's tokens attend to each other. Both paths run
    at ``precision`` (autocast for bf16 / fp16)."""
    spec = model.spec
    model.to(device).eval()
    batches = sliding_windows(spec, length, hop, streams, windows_per_stream)
    warm = sliding_windows(spec, length, hop, streams, 4, seed=1)

    amp = PRECISIONS[precision]

    def full(b: Sequence[WindowInputs]) -> object:
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            out = model(collate(b, spec).to(device))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out

    for b in warm:  # warm-up: allocator, kernels
        full(b)
        IncrementalFusion(model, device=device, precision=precision)(b)
    inc = rec = fuse_s = 0.0
    for _ in range(repeats):
        fused = _TimedFusion(model, device=device, precision=precision)
        rate = _rate(fused, batches)
        if rate > inc:
            inc, fuse_s = rate, fused.fuse_s
        rec = max(rec, _rate(full, batches))
    k = length / hop
    n = len(batches) * streams
    full_s = n / rec
    ceiling = full_s / ((full_s - fuse_s) / k + fuse_s)
    out = {"incremental_speedup": inc / rec, "k": k, "ceiling": ceiling,
           "incremental_windows_per_s": inc, "full_windows_per_s": rec,
           "fuse_share": fuse_s * inc / n}  # fmt: skip
    if device.type == "cuda":  # the incremental path again, its fusion step from CUDA graphs
        run = IncrementalFusion(model, device=device, precision=precision, cuda_graphs=True)
        for b in warm:  # captures the batch shape the phase uses
            run(b)
        graphed = 0.0
        for _ in range(repeats):
            for s in range(streams):  # an empty cache each time, the graphs kept
                run.drop_session(s)
            graphed = max(graphed, _rate(run, batches))
        out["graphed_windows_per_s"] = graphed
    return out
