"""What the dashboard shows of each stream, kept by a sink: :class:`StreamBoard`.

Per stream it holds the newest prediction (label, score, tags, which modalities it
held), the modalities' statuses, the windows per second and the latency of the recent
predictions, and a ring of the recent predictions' scores for the timeline of a page
opened late. Everything is bounded: the rate and latency from the last ``RATE_S``
seconds of at most ``RATE_MAX`` predictions, the ring ``RECENT_S`` seconds of at most
``RECENT_MAX`` points of at most ``MAX_LABELS`` scores each; what leaves the ring early
(the cap, not the age) is counted in ``trimmed``.

A modality's light (``modalities`` of ``GET /api/streams``):

- ``offline``: its source is not capturing (the last status said offline, or none yet);
- ``late``: online, but absent from the stream's newest window, or no window has come
  for ``STALE_S`` seconds (or none yet): it captures, yet nothing of it reaches the model;
- ``present``: online and present in the newest window.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from streamer.events.event import EventMessage
from streamer.frames import MODALITIES, Modality
from streamer.predictions import Prediction
from streamer.sinks.base import Event, LocalSink, Status

RATE_S = 10.0  # windows/s and latency over this many seconds
RATE_MAX = 512  # arrivals kept for them
STALE_S = 10.0  # no window for this long: every online modality is late
RECENT_S = 300.0  # the timeline ring: this many seconds of window ends
RECENT_MAX = 1200  # and at most this many points (10 min at a 0.5 s hop)
MAX_LABELS = 16  # scores kept per point: the highest

Light = Literal["present", "late", "offline"]


@dataclass
class StreamView:
    id: str
    modalities: list[Modality]
    webrtc: bool
    last: Prediction | None = None
    last_at: float = 0.0  # monotonic arrival of ``last``
    online: dict[str, bool] = field(default_factory=dict)
    arrivals: deque[tuple[float, float]] = field(
        default_factory=lambda: deque(maxlen=RATE_MAX)
    )  # (monotonic arrival, end_to_publish_ms)
    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT_MAX))
    trimmed: int = 0  # points the cap pushed out before they aged out


class StreamBoard(LocalSink):
    """The sink behind ``GET /api/streams`` and ``GET /api/streams/{stream}/recent``."""

    name = "dashboard"

    def __init__(
        self,
        streams: Iterable[tuple[str, Iterable[Modality], bool]],
        *,
        now: Callable[[], float] = time.monotonic,
        enabled: Callable[[str], bool] = lambda stream: True,
    ) -> None:
        """``streams``: (id, its configured modalities, its video or audio is webrtc);
        ``enabled``: False while a stream is paused (``P/N/S/set/enabled OFF``)."""
        self.views = {sid: StreamView(sid, list(mods), webrtc) for sid, mods, webrtc in streams}
        self.now = now
        self.enabled = enabled

    def publish(self, event: Event) -> None:
        if isinstance(event, Prediction):
            self._prediction(event)
        elif isinstance(event, Status) and event.stream in self.views:
            self.views[event.stream].online[event.modality] = event.online
        elif isinstance(event, EventMessage):
            pass  # the page reads events from /api/events and the history

    def _prediction(self, p: Prediction) -> None:
        v = self.views.get(p.stream)
        if v is None:
            return
        now = self.now()
        v.last, v.last_at = p, now
        v.arrivals.append((now, p.end_to_publish_ms))
        top = sorted(p.scores, key=lambda kv: -kv[1])[:MAX_LABELS]
        point = {"t": p.end_s, "label": p.label, "score": p.score, "scores": dict(top)}
        if len(v.recent) == v.recent.maxlen and v.recent[0]["t"] > p.end_s - RECENT_S:
            v.trimmed += 1
        v.recent.append(point)
        while v.recent and v.recent[0]["t"] < p.end_s - RECENT_S:
            v.recent.popleft()

    # -- what the page reads ---------------------------------------------------------------
    def lights(self, v: StreamView) -> dict[str, Light]:
        stale = v.last is None or self.now() - v.last_at > STALE_S
        out: dict[str, Light] = {}
        for m in v.modalities:
            if not v.online.get(m, False):
                out[m] = "offline"
            elif stale or v.last is None or not v.last.present[MODALITIES.index(m)]:
                out[m] = "late"
            else:
                out[m] = "present"
        return out

    def stream_json(self, v: StreamView) -> dict[str, Any]:
        now = self.now()
        recent = [(t, ms) for t, ms in v.arrivals if t >= now - RATE_S]
        span = min(RATE_S, now - recent[0][0]) if recent else RATE_S
        # n arrivals over their span give n - 1 intervals; a lone one gives 1 / RATE_S
        rate = (len(recent) - 1) / span if len(recent) > 1 and span > 0 else len(recent) / RATE_S
        p = v.last
        return {
            "id": v.id,
            "webrtc": v.webrtc,
            "label": p.label if p is not None else None,
            "score": p.score if p is not None else None,
            "tags": [
                {"tag": t.tag, "score": t.score, "modality": t.modality} for t in (p.tags or ())
            ]
            if p is not None
            else [],  # fmt: skip
            "modalities": self.lights(v),
            "windows_per_s": round(rate, 2),
            "latency_ms": round(statistics.median(ms for _, ms in recent), 1) if recent else None,
            "enabled": self.enabled(v.id),
        }

    def streams_json(self, node: str) -> dict[str, Any]:
        return {"node": node, "streams": [self.stream_json(v) for v in self.views.values()]}

    def recent_json(self, stream: str) -> dict[str, Any]:
        v = self.views[stream]
        return {"stream": stream, "points": list(v.recent), "trimmed": v.trimmed}

    def counters(self) -> dict[str, dict[str, int]]:
        """Per stream: points in the ring and points the cap pushed out (stats)."""
        return {
            sid: {"recent": len(v.recent), "trimmed": v.trimmed} for sid, v in self.views.items()
        }
