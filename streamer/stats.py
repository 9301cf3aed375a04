"""Per-stream counters and latency percentiles, all bounded.

The pipeline increments them on the event loop; ``snapshot()`` gives the ``stats`` JSON.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamer.frames import MODALITIES, Modality

LATENCY_SAMPLES = 2048  # recent windows kept for percentiles


@dataclass
class StreamStats:
    frames_in: Counter[str] = field(default_factory=Counter)  # per modality
    windows_out: int = 0
    dropped: Counter[str] = field(default_factory=Counter)  # per place: source, window, ...
    late: Counter[str] = field(default_factory=Counter)  # per modality
    rejected: Counter[str] = field(default_factory=Counter)  # per kind
    errors: int = 0
    latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))
    inference_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))
    _last_frames: Counter[str] = field(default_factory=Counter)
    _last_t: float = field(default_factory=time.monotonic)

    def count_in(self, modality: Modality, n: int = 1) -> None:
        self.frames_in[modality] += n


def percentiles(values: deque[float] | list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None}
    arr = np.fromiter(values, dtype=np.float64)
    p50, p99 = np.percentile(arr, [50, 99])
    return {"p50": round(float(p50), 2), "p99": round(float(p99), 2)}


class Stats:
    def __init__(self, streams: list[str]) -> None:
        self.streams: dict[str, StreamStats] = {s: StreamStats() for s in streams}

    def __getitem__(self, stream: str) -> StreamStats:
        return self.streams[stream]

    def snapshot(self) -> dict[str, Any]:
        """Counters since start, and input rates since the previous snapshot."""
        out: dict[str, Any] = {}
        now = time.monotonic()
        for sid, st in self.streams.items():
            dt = max(now - st._last_t, 1e-3)
            fps = {m: round((st.frames_in[m] - st._last_frames[m]) / dt, 2) for m in MODALITIES}
            st._last_frames = Counter(st.frames_in)
            st._last_t = now
            out[sid] = {
                "fps_in": fps,
                "frames_in": dict(st.frames_in),
                "windows_out": st.windows_out,
                "dropped": sum(st.dropped.values()),
                "dropped_by": dict(st.dropped),
                "late": sum(st.late.values()),
                "late_by": dict(st.late),
                "rejected": sum(st.rejected.values()),
                "rejected_by": dict(st.rejected),
                "errors": st.errors,
                "latency_ms": percentiles(st.latency_ms),
                "inference_ms": percentiles(st.inference_ms),
            }
        return out
