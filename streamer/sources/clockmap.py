"""Map media time (a container's PTS, seconds) onto the node clock (epoch ns).

One :class:`PtsMapper` is shared by all tracks of one container, so video and audio of
the same file keep their relative timing. The base is fixed at the first frame:
``node_ns = clock.now_ns() - first_pts``. Then:

* live sources are never stamped in the future: data that arrives faster than real time
  (the burst of packets buffered while a stream is probed, a forward PTS jump) moves the
  base back so the newest item maps to "now" (the earliest-arrival estimate of the
  offset); data that falls more than ``resync_s`` behind the clock (a sender restart, a
  backward jump or wrap) resyncs the base forward. Callers drop an item whose time is not
  after its track's previous one (:class:`StaleFilter`);
* loop playback adds one file duration per pass, so time keeps increasing.

Pure logic on an injected clock; not thread-safe (one demuxer thread uses it).
"""

from __future__ import annotations

import logging

from streamer.clock import Clock
from streamer.frames import NS

log = logging.getLogger(__name__)


class PtsMapper:
    def __init__(self, clock: Clock, *, live: bool = False, resync_s: float = 1.0) -> None:
        self.clock = clock
        self.live = live
        self.resync_ns = round(resync_s * NS)
        self.resyncs = 0
        self._base: int | None = None  # node ns of media time 0 (for this pass)
        self._first_ns: int | None = None  # media ns of the first frame of the file
        self._end_ns: int | None = None  # media ns of the furthest end seen this pass
        self._offset = 0  # added per loop pass

    @property
    def started(self) -> bool:
        return self._base is not None

    def map(self, media_s: float, duration_s: float = 0.0) -> int:
        """Node ns of media time ``media_s``; ``duration_s`` (of the item) extends the pass."""
        media_ns = round(media_s * NS)
        end = media_ns + round(duration_s * NS)
        if self._end_ns is None or end > self._end_ns:
            self._end_ns = end
        if self._base is None:
            self._base = self.clock.now_ns() - media_ns
            self._first_ns = media_ns
        t = self._base + self._offset + media_ns
        if self.live:
            now = self.clock.now_ns()
            if t > now or now - t > self.resync_ns:
                if abs(t - now) > self.resync_ns:
                    log.info("media time is %.3f s off the clock: resync", (t - now) / NS)
                    self.resyncs += 1
                self._base += now - t
                t = now
        return t

    def next_pass(self) -> None:
        """Start another pass over the same file (loop playback): shift by its duration."""
        if self._first_ns is None or self._end_ns is None:
            return
        self._offset += max(self._end_ns - self._first_ns, 1)
        self._end_ns = None


class StaleFilter:
    """Drops a live item stamped no later than its track's previous one (a burst that the
    mapper moved back to "now"); ``dropped`` counts them. Not thread-safe."""

    def __init__(self) -> None:
        self.dropped = 0
        self._last: dict[str, int] = {}

    def stale(self, track: str, ts: int) -> bool:
        """True (and counted) when ``ts`` is not after ``track``'s previous time."""
        last = self._last.get(track)
        if last is not None and ts <= last:
            self.dropped += 1
            return True
        self._last[track] = ts
        return False

    def reset(self) -> None:
        """Forget the previous times (a source opened again); the count stays."""
        self._last.clear()
