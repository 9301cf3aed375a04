"""The node's snapshots: a :class:`~streamer.snapshots.ring.SnapshotRing` per stream with
video, the JPEG of an event's peak, and the listener that sends it to the sinks.

An event's ``peak_time`` (epoch seconds) is the end of the window that scored its peak:
:meth:`Snapshots.for_event` gives the newest JPEG inside that window
``[peak_time - window.length, peak_time)``, else the nearest within one snapshot period
of it, else None (counted in ``missed``: the ring no longer covers it, or the stream has
no video). With ``draw``, the label and score are written on the picture (Pillow).

:class:`EventSnapshots` follows the tracker: on each ``new``, and on an ``update`` or
``end`` whose peak moved since the snapshot sent, it hands a :class:`SnapshotMessage`
to the sinks (MQTT: retained ``P/N/S/snapshot``).
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from streamer.events.event import EventMessage
from streamer.frames import NS
from streamer.snapshots.ring import Snapshot, SnapshotRing
from streamer.snapshots.settings import SnapshotsConfig


@dataclass(frozen=True, slots=True)
class SnapshotMessage:
    """The JPEG of an event's peak, as a sink's input."""

    stream: str
    event_id: str
    jpeg: bytes


class Snapshots:
    def __init__(self, cfg: SnapshotsConfig, streams: Iterable[str], *, window_s: float) -> None:
        self.cfg = cfg
        self.window_ns = round(window_s * NS)
        self.rings = {
            s: SnapshotRing(
                s,
                fps=cfg.fps,
                frames=cfg.frames,
                width=cfg.width,
                quality=cfg.quality,
                max_bytes=cfg.max_bytes,
            )  # fmt: skip
            for s in streams
        }
        self.counts: Counter[str] = Counter()  # for_event: found, missed

    def ring(self, stream: str) -> SnapshotRing | None:
        """The stream's ring, which its video source feeds (None: it keeps none)."""
        return self.rings.get(stream)

    def latest(self, stream: str) -> Snapshot | None:
        ring = self.rings.get(stream)
        return ring.latest() if ring is not None else None

    def for_event(self, event_json: dict[str, Any]) -> bytes | None:
        """The JPEG of the frame at the event's peak (see the module), or None."""
        ring = self.rings.get(str(event_json.get("stream")))
        peak = event_json.get("peak_time")
        snap = None
        if ring is not None and isinstance(peak, int | float):
            end = round(peak * NS)
            snap = ring.at(end - self.window_ns, end, ring.period_ns)
        if snap is None:
            self.counts["missed"] += 1
            return None
        self.counts["found"] += 1
        if self.cfg.draw:
            score = event_json.get("peak_score", 0.0)
            return drawn(snap.jpeg, f"{event_json.get('label')} {score:.2f}")
        return snap.jpeg

    def counters(self) -> dict[str, Any]:
        return {**self.counts, "streams": {s: r.counters() for s, r in self.rings.items()}}


def drawn(jpeg: bytes, text: str) -> bytes:
    """``jpeg`` with ``text`` in its top-left corner, white on a dark box (Pillow)."""
    from PIL import Image, ImageDraw  # only with draw: true, which checks it is there

    img = Image.open(io.BytesIO(jpeg)).convert("RGB")
    d = ImageDraw.Draw(img)
    box = d.textbbox((4, 4), text)
    d.rectangle((box[0] - 3, box[1] - 3, box[2] + 3, box[3] + 3), fill=(0, 0, 0))
    d.text((4, 4), text, fill=(255, 255, 255))
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=85)
    return out.getvalue()


class EventSnapshots:
    """Tracker listener: the peak's JPEG of each event to ``publish``, when it changes."""

    def __init__(self, snapshots: Snapshots, publish: Callable[[SnapshotMessage], None]) -> None:
        self.snapshots = snapshots
        self.publish = publish
        self._sent: dict[str, float] = {}  # open event id -> peak_time of its snapshot

    def __call__(self, m: EventMessage) -> None:
        ev = m.event
        eid = str(ev["id"])
        peak = float(ev["peak_time"])
        stale = m.type == "new" or self._sent.get(eid) != peak
        if m.type == "end":
            self._sent.pop(eid, None)  # bounded by the open events
        if not stale or m.stream not in self.snapshots.rings:
            return
        jpeg = self.snapshots.for_event(ev)
        if jpeg is None:
            return
        if m.type != "end":
            self._sent[eid] = peak
        self.publish(SnapshotMessage(m.stream, eid, jpeg))


def snapshot_streams(
    cfg: SnapshotsConfig, streams: dict[str, bool], *, events: bool, http: bool
) -> list[str]:
    """The streams that keep snapshots (``streams``: id -> has video): those with video,
    when the config has ``events:`` or ``http:`` and snapshots are enabled."""
    if not cfg.enabled or not (events or http):
        return []
    return [s for s, video in streams.items() if video]


def node_snapshots(
    cfg: SnapshotsConfig, streams: dict[str, bool], *, events: bool, http: bool, window_s: float
) -> Snapshots | None:
    """The node's snapshots: a ring per stream of :func:`snapshot_streams`; else None."""
    with_video = snapshot_streams(cfg, streams, events=events, http=http)
    return Snapshots(cfg, with_video, window_s=window_s) if with_video else None
