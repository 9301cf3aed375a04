"""The hysteresis tracker: a stream's predictions in, its events' transitions out.

Per stream and label (:class:`~streamer.events.settings.EventsConfig` says which labels
and their thresholds), on event time (each window's ``window.end``)::

    idle   --score >= on--> arming (a run of windows at or above on; below on: idle)
    arming --min_windows in a row--> open: "new"
    open   --score < off--> cooling (since that window); score >= off again: open
    open   --peak rises, update_interval_s after the last message--> "update"
    cooling--cooldown_s later still below off--> ended: "end" (reason "cooldown")

At most one open event per stream and label; a stream that ends or stops ends its open
events (reason ``stream_ended`` / ``stopped``) and drops its state, and predictions that
come for it later are not tracked. A label is tracked only while it is arming or open:
``max_labels`` bounds that per stream (a tagging model's vocabulary is open). Listeners
(:meth:`EventTracker.subscribe`: the sinks, later a store) get every transition in order.

At run time (``P/N/S/set/events``) :meth:`EventTracker.configure` changes one stream's
thresholds (a label's, or the defaults of all), validated as the config is; they apply
from that stream's next window on, to its open and arming labels too. A paused stream
(:meth:`EventTracker.pause`) ends its open events (reason ``disabled``) and tracks
nothing until :meth:`EventTracker.resume`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from streamer.events.event import (
    MODALITIES,
    EndReason,
    EventMessage,
    LabelEvent,
    MessageType,
    new_event_id,
)
from streamer.events.settings import EventsConfig, LabelOverride, Thresholds
from streamer.predictions import Prediction

Listener = Callable[[EventMessage], None]


@dataclass(slots=True)
class _Label:
    """One label of one stream while it is arming or open."""

    th: Thresholds
    event: LabelEvent  # the candidate while arming (not announced), the event once open
    run: int = 0  # windows in a row at or above on, while arming
    announced: bool = False
    below_since: float | None = None
    last_message: float = 0.0  # event time of the last message about it
    peak_unsent: bool = False


@dataclass(slots=True)
class _Stream:
    labels: dict[str, _Label] = field(default_factory=dict)
    last_t: float = 0.0


class EventTracker:
    def __init__(self, cfg: EventsConfig, *, node: str, run: str) -> None:
        self.cfg = cfg
        self.node = node
        self.run = run
        self._streams: dict[str, _Stream] = {}
        self._closed: set[str] = set()
        self._thresholds: dict[str, Thresholds] = {}
        # streams whose thresholds were set at run time: their config, their cache
        self._stream_cfg: dict[str, EventsConfig] = {}
        self._stream_th: dict[str, dict[str, Thresholds]] = {}
        self._paused: set[str] = set()
        self._listeners: list[Listener] = []
        self.counts: Counter[str] = Counter()  # opened, ended_<reason>, refused, ignored

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def open_events(self) -> list[LabelEvent]:
        return [s.event for st in self._streams.values() for s in st.labels.values() if s.announced]

    def counters(self) -> dict[str, int]:
        return {**self.counts, "open": len(self.open_events())}

    # -- the input -----------------------------------------------------------------------
    def observe(self, p: Prediction) -> list[EventMessage]:
        """Take one prediction (in window order per stream); the transitions it caused."""
        if p.stream in self._closed or p.stream in self._paused:
            self.counts["ignored"] += 1
            return []
        st = self._streams.setdefault(p.stream, _Stream())
        t = p.end_s
        st.last_t = max(st.last_t, t)
        scores = dict(p.scores)
        out: list[EventMessage] = []
        # labels already followed first (absent from a tagging model's scores: 0.0)
        for label in list(st.labels):
            self._step(st, label, scores.pop(label, 0.0), p, out)
        for label, score in scores.items():
            th = self._th(p.stream, label)
            if score >= th.on and self.cfg.tracks(label):
                if len(st.labels) >= self.cfg.max_labels:
                    self.counts["refused"] += 1
                    continue
                st.labels[label] = _Label(th, self._candidate(p, label, t))
                self._step(st, label, score, p, out)
        self._emit(out)
        return out

    def close_stream(self, stream: str, reason: EndReason) -> list[EventMessage]:
        """``stream`` ended or stopped: end its open events, drop its state for good."""
        self._closed.add(stream)
        st = self._streams.pop(stream, None)
        out: list[EventMessage] = []
        for s in st.labels.values() if st is not None else ():
            if s.announced:
                self._end(s, st.last_t if st is not None else s.event.start, reason, out)
        self._emit(out)
        return out

    def pause(self, stream: str) -> list[EventMessage]:
        """``stream`` is paused: end its open events (``disabled``); until :meth:`resume`
        its predictions (the windows flushed at the pause) are not tracked."""
        self._paused.add(stream)
        st = self._streams.pop(stream, None)
        out: list[EventMessage] = []
        for s in st.labels.values() if st is not None else ():
            if s.announced:
                self._end(s, st.last_t if st is not None else s.event.start, "disabled", out)
        self._emit(out)
        return out

    def resume(self, stream: str) -> None:
        self._paused.discard(stream)

    def config_of(self, stream: str) -> EventsConfig:
        """The events config ``stream`` runs with (the node's, or what was set at run time)."""
        return self._stream_cfg.get(stream, self.cfg)

    def configure(self, stream: str, label: str | None, change: LabelOverride) -> EventsConfig:
        """Set ``label``'s thresholds (None: the defaults of every label) on ``stream``
        from its next window on; raises ``ValueError`` (pydantic's) when the result is not
        a valid ``events:`` section (``off`` above ``on``, a label not in ``labels``)."""
        base = self.config_of(stream)
        fields = change.model_dump(exclude_none=True)
        if label is None:
            cfg = EventsConfig.model_validate({**base.model_dump(), **fields})
        else:
            old = base.overrides.get(label, LabelOverride()).model_dump(exclude_none=True)
            overrides = {k: v.model_dump(exclude_none=True) for k, v in base.overrides.items()}
            overrides[label] = {**old, **fields}
            cfg = EventsConfig.model_validate({**base.model_dump(), "overrides": overrides})
        self._stream_cfg[stream] = cfg
        cache = self._stream_th[stream] = {}
        st = self._streams.get(stream)
        for name, s in st.labels.items() if st is not None else ():
            s.th = cache[name] = cfg.thresholds(name)
        return cfg

    def close_all(self, reason: EndReason) -> list[EventMessage]:
        out: list[EventMessage] = []
        for stream in list(self._streams):
            out += self.close_stream(stream, reason)
        return out

    # -- the steps -----------------------------------------------------------------------
    def _th(self, stream: str, label: str) -> Thresholds:
        cfg = self._stream_cfg.get(stream)
        cache = self._thresholds if cfg is None else self._stream_th[stream]
        th = cache.get(label)
        if th is None:
            th = cache[label] = (cfg or self.cfg).thresholds(label)
        return th

    def _candidate(self, p: Prediction, label: str, t: float) -> LabelEvent:
        return LabelEvent(
            id=new_event_id(), node=self.node, stream=p.stream, run=self.run, label=label,
            start=t, peak_score=0.0, peak_time=t,
        )  # fmt: skip

    def _step(self, st: _Stream, label: str, score: float, p: Prediction,
              out: list[EventMessage]) -> None:  # fmt: skip
        s = st.labels[label]
        t = p.end_s
        if not s.announced:
            if score < s.th.on:  # the run broke before it was long enough
                del st.labels[label]
                return
            s.run += 1
            self._take(s.event, score, p, t)
            if s.run >= s.th.min_windows:
                s.announced = True
                s.last_message = t
                self.counts["opened"] += 1
                self._message(s, "new", out)
            return
        if score >= s.th.off:
            s.below_since = None
            if self._take(s.event, score, p, t):
                s.peak_unsent = True
            if s.peak_unsent and t - s.last_message >= self.cfg.update_interval_s:
                s.last_message = t
                s.peak_unsent = False
                self._message(s, "update", out)
            return
        if s.below_since is None:
            s.below_since = t
        if t - s.below_since >= s.th.cooldown_s:
            self._end(s, s.below_since, "cooldown", out)
            del st.labels[label]

    @staticmethod
    def _take(ev: LabelEvent, score: float, p: Prediction, t: float) -> bool:
        """Count window ``p`` into the event; True when it is a new peak."""
        ev.windows += 1
        for m, present in zip(MODALITIES, p.present, strict=True):
            e = ev.evidence[m]
            e.windows += present
            if p.tags is not None:
                hit = any(tag.tag == ev.label and tag.modality == m for tag in p.tags)
                e.tagged = bool(e.tagged) or hit
        if score > ev.peak_score:
            ev.peak_score, ev.peak_time = score, t
            return True
        return False

    def _end(self, s: _Label, end: float, reason: EndReason, out: list[EventMessage]) -> None:
        s.event.end = max(end, s.event.start)
        s.event.reason = reason
        self.counts[f"ended_{reason}"] += 1
        self._message(s, "end", out)

    @staticmethod
    def _message(s: _Label, kind: MessageType, out: list[EventMessage]) -> None:
        out.append(EventMessage(kind, s.event.to_json()))

    def _emit(self, messages: list[EventMessage]) -> None:
        for m in messages:
            for listener in self._listeners:
                listener(m)
