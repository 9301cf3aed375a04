"""An event: a span of a stream's event time in which one label held (the tracker's
hysteresis, :mod:`streamer.events.tracker`), and the message that announces it.

``P/N/S/events`` carries ``{"type": "new" | "update" | "end", "event": {...}}``
(``streamer/contract/event.schema.json``). Times are event time (epoch seconds), the
ends of the windows that decided: ``start`` the end of the first window of the run that
opened it, ``end`` (null while open) the end of the first window below ``off`` that the
cooldown then confirmed.

The per-modality evidence: the model gives one score per window for all its inputs
together (no score per modality alone is computed live), so an event says, per modality,
whether it was ``present`` in any of the event's windows, the ``fraction`` of them in
which it was, and ``supported``: for a tagging model, whether that modality's own tags
named the label in any of them; null for a model that does not tag (unknown).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

SCHEMA = "streamer.event/1"
MODALITIES = ("video", "audio", "text")
MessageType = Literal["new", "update", "end"]
# why an event ended: its score stayed below off (cooldown), the node stopped, the
# stream ended, or the stream was paused (P/N/S/set/enabled OFF)
EndReason = Literal["cooldown", "stopped", "stream_ended", "disabled"]


def new_event_id() -> str:
    return uuid.uuid4().hex


@dataclass(slots=True)
class Evidence:
    """One modality over an event's windows."""

    windows: int = 0  # windows in which it was present
    tagged: bool | None = None  # None: the model does not tag

    def to_json(self, total: int) -> dict[str, Any]:
        return {
            "present": self.windows > 0,
            "fraction": round(self.windows / total, 4) if total else 0.0,
            "supported": self.tagged,
        }


@dataclass(slots=True)
class LabelEvent:
    """One event; mutable while open (only the tracker changes it)."""

    id: str
    node: str
    stream: str
    run: str
    label: str
    start: float
    peak_score: float
    peak_time: float
    end: float | None = None
    windows: int = 0  # the windows that took part (from the first of the opening run)
    reason: EndReason | None = None
    evidence: dict[str, Evidence] = field(
        default_factory=lambda: {m: Evidence() for m in MODALITIES}
    )

    @property
    def open(self) -> bool:
        return self.end is None

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "id": self.id,
            "node": self.node,
            "stream": self.stream,
            "run": self.run,
            "label": self.label,
            "start": self.start,
            "end": self.end,
            "peak_score": self.peak_score,
            "peak_time": self.peak_time,
            "windows": self.windows,
            "modalities": {m: e.to_json(self.windows) for m, e in self.evidence.items()},
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class EventMessage:
    """A transition of an event, as a sink's input (``type`` and a snapshot of it)."""

    type: MessageType
    event: dict[str, Any]  # LabelEvent.to_json() at the transition

    @property
    def stream(self) -> str:
        return str(self.event["stream"])

    @property
    def label(self) -> str:
        return str(self.event["label"])

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "event": self.event}

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":"), allow_nan=False).encode()
