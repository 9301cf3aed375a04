"""Prediction messages: the contract's JSON, ``seq`` per stream, label-on-change."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from streamer.frames import NS, Window

SCHEMA = "streamer.prediction/1"


def new_run_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class ModelId:
    name: str
    version: str
    labels: tuple[str, ...]


class PredictionBuilder:
    """Numbers windows 0, 1, 2, ... per stream and builds the payload; a window lost
    after the aligner emitted it takes a number too (:meth:`skip`), so a subscriber sees
    every such loss as a gap in ``seq``."""

    def __init__(self, node: str, run: str, model: ModelId) -> None:
        self.node = node
        self.run = run
        self.model = model
        self._seq: dict[str, int] = {}
        self._skipped: dict[str, int] = {}
        self._label: dict[str, str] = {}

    def build(
        self,
        window: Window,
        probs: npt.NDArray[np.float32] | Sequence[float],
        *,
        inference_ms: float,
        now_ns: int,
    ) -> dict[str, Any]:
        seq = self._take(window.stream)
        p = np.clip(np.asarray(probs, dtype=np.float64), 0.0, 1.0)
        top = int(np.argmax(p))
        labels = self.model.labels
        # a window cut short is measured from its cut: it could not be published sooner
        ref_ns = window.end_ns if window.cut_ns is None else min(window.end_ns, window.cut_ns)
        payload: dict[str, Any] = {
            "schema": SCHEMA,
            "node": self.node,
            "stream": window.stream,
            "run": self.run,
            "seq": seq,
            "window": {"start": window.start_ns / NS, "end": window.end_ns / NS},
            "label": labels[top],
            "score": round(float(p[top]), 6),
            "scores": {labels[i]: round(float(v), 6) for i, v in enumerate(p)},
            "modalities": {
                "video": {"present": bool(window.present["video"]), "frames": window.frames},
                "audio": {
                    "present": bool(window.present["audio"]),
                    "seconds": round(window.audio_seconds, 4),
                },
                "text": {"present": bool(window.present["text"]), "events": len(window.texts)},
            },
            "latency_ms": {
                "inference": round(inference_ms, 3),
                "end_to_publish": round((now_ns - ref_ns) / 1e6, 3),
            },
            "model": {"name": self.model.name, "version": self.model.version},
        }
        if window.partial:
            payload["partial"] = True
        return payload

    def skip(self, stream: str) -> None:
        """A window of ``stream`` was lost: its seq is not used."""
        self._take(stream)
        self._skipped[stream] = self._skipped.get(stream, 0) + 1

    def _take(self, stream: str) -> int:
        seq = self._seq.get(stream, 0)
        self._seq[stream] = seq + 1
        return seq

    def counts(self) -> dict[str, int]:
        """Sequence numbers taken per stream (their seq ran 0..n-1), lost ones included."""
        return dict(self._seq)

    def skipped(self, stream: str) -> int:
        return self._skipped.get(stream, 0)

    def label_changed(self, stream: str, label: str) -> bool:
        """True the first time and whenever the stream's top label differs from the last."""
        if self._label.get(stream) == label:
            return False
        self._label[stream] = label
        return True


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
