"""Prediction messages: a typed :class:`Prediction` per window, ``seq`` per stream.

:class:`PredictionBuilder` numbers the windows and builds the typed value; a sink turns
it into bytes (:meth:`Prediction.encode`: the contract's JSON, ``streamer schema``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from models.tags import Tag
from streamer.frames import NS, Window

SCHEMA = "streamer.prediction/1"


def new_run_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class ModelId:
    name: str
    version: str
    labels: tuple[str, ...]
    # "classes": label and scores are the model's classes; "tags": they are the window's
    # tags (the perception preset: its classes are not read)
    readout: str = "classes"


@dataclass(frozen=True, slots=True)
class Prediction:
    """One window's prediction; the fields of the contract's JSON, typed."""

    node: str
    stream: str
    run: str
    seq: int
    start_s: float
    end_s: float
    label: str
    score: float
    scores: tuple[tuple[str, float], ...]  # in label order
    present: tuple[bool, bool, bool]  # video, audio, text
    frames: int  # video frames in the window
    audio_seconds: float
    text_events: int
    inference_ms: float
    end_to_publish_ms: float
    model: ModelId
    partial: bool = False  # cut at shutdown before its end
    tags: tuple[Tag, ...] | None = None  # None: the model does not tag

    def to_json(self) -> dict[str, Any]:
        """The contract's JSON object (``streamer schema``)."""
        out: dict[str, Any] = {
            "schema": SCHEMA,
            "node": self.node,
            "stream": self.stream,
            "run": self.run,
            "seq": self.seq,
            "window": {"start": self.start_s, "end": self.end_s},
            "label": self.label,
            "score": self.score,
            "scores": dict(self.scores),
            "modalities": {
                "video": {"present": self.present[0], "frames": self.frames},
                "audio": {"present": self.present[1], "seconds": self.audio_seconds},
                "text": {"present": self.present[2], "events": self.text_events},
            },
            "latency_ms": {
                "inference": self.inference_ms,
                "end_to_publish": self.end_to_publish_ms,
            },
            "model": {"name": self.model.name, "version": self.model.version},
        }
        if self.partial:
            out["partial"] = True
        if self.tags is not None:
            out["tags"] = [{"tag": t.tag, "score": t.score, "modality": t.modality}
                           for t in self.tags]  # fmt: skip
        return out

    def encode(self) -> bytes:
        """The JSON as compact UTF-8 bytes, as published."""
        return json.dumps(self.to_json(), separators=(",", ":"), allow_nan=False).encode()


NO_TAG = "none"


def tag_readout(tags: Sequence[Tag]) -> tuple[str, float, tuple[tuple[str, float], ...]]:
    """Label, score and scores from a window's tags (the ``tags`` readout): each tag's best
    score over the modalities, best first, after ``none`` (1 - the top tag's score). A
    window without tags is ``none`` 1.0, with ``other`` 0.0 (``scores`` has two entries at
    least, as for a model's classes)."""
    best: dict[str, float] = {}
    for t in tags:
        best[t.tag] = max(best.get(t.tag, 0.0), t.score)
    ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))
    if not ranked:
        return NO_TAG, 1.0, ((NO_TAG, 1.0), ("other", 0.0))
    top, score = ranked[0]
    none = round(1.0 - score, 6)
    return top, score, ((NO_TAG, none), *((k, v) for k, v in ranked if k != NO_TAG))


class PredictionBuilder:
    """Numbers windows 0, 1, 2, ... per stream and builds the prediction; a window lost
    after the aligner emitted it takes a number too (:meth:`skip`), so a subscriber sees
    every such loss as a gap in ``seq``."""

    def __init__(self, node: str, run: str, model: ModelId) -> None:
        self.node = node
        self.run = run
        self.model = model
        self._seq: dict[str, int] = {}
        self._skipped: dict[str, int] = {}

    def build(
        self,
        window: Window,
        probs: npt.NDArray[np.float32] | Sequence[float],
        *,
        inference_ms: float,
        now_ns: int,
        model: ModelId | None = None,
        tags: tuple[Tag, ...] | None = None,
    ) -> Prediction:
        """``model``: the one that gave ``probs``, if not the builder's (after a swap);
        ``tags``: what its encoders' heads saw (None: it does not tag)."""
        model = model or self.model
        seq = self._take(window.stream)
        if model.readout == "tags":
            label, score, scores = tag_readout(tags or ())
        else:
            p = np.clip(np.asarray(probs, dtype=np.float64), 0.0, 1.0)
            top = int(np.argmax(p))
            label, score = model.labels[top], round(float(p[top]), 6)
            scores = tuple((model.labels[i], round(float(v), 6)) for i, v in enumerate(p))
        # a window cut short is measured from its cut: it could not be published sooner
        ref_ns = window.end_ns if window.cut_ns is None else min(window.end_ns, window.cut_ns)
        return Prediction(
            node=self.node,
            stream=window.stream,
            run=self.run,
            seq=seq,
            start_s=window.start_ns / NS,
            end_s=window.end_ns / NS,
            label=label,
            score=score,
            scores=scores,
            present=(
                bool(window.present["video"]),
                bool(window.present["audio"]),
                bool(window.present["text"]),
            ),
            frames=window.frames,
            audio_seconds=round(window.audio_seconds, 4),
            text_events=len(window.texts),
            inference_ms=round(inference_ms, 3),
            end_to_publish_ms=round((now_ns - ref_ns) / 1e6, 3),
            model=model,
            partial=window.partial,
            tags=tags,
        )

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
