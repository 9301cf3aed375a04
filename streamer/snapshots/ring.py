"""One stream's ring of recent JPEGs, fed by its video source's thread.

A source offers every decoded frame with its node-clock ``pts_ns``
(:meth:`SnapshotRing.offer`); the ring takes at most one per ``1 / fps`` of event time
(one per slot ``pts_ns // period``: anything else costs a comparison), scales it to the
configured width and encodes it with PyAV's ``mjpeg`` encoder in the caller's thread.
It keeps ``frames`` JPEGs and ``max_bytes`` at most, evicting the oldest (counted).

Thread-safe: sources offer from their threads, the event loop reads.
"""

from __future__ import annotations

import fractions
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import av

from streamer.frames import NS

# a source's hook: each decoded frame and its node-clock pts (ns), from its own thread
FrameTap = Callable[[av.VideoFrame, int], object]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One JPEG of a stream's frame captured at ``pts_ns`` (node clock, epoch ns)."""

    stream: str
    pts_ns: int
    jpeg: bytes
    width: int
    height: int


def scaled(width: int, height: int, target: int) -> tuple[int, int]:
    """``target`` wide (0 or wider than the source: the source's width), height by
    aspect; both even (4:2:0 chroma)."""
    if target <= 0 or target >= width:
        w, h = width, height
    else:
        w, h = target, round(height * target / width)
    return max(2, w - w % 2), max(2, h - h % 2)


class JpegEncoder:
    """PyAV's mjpeg encoder at one quantiser scale; reopened when the size changes."""

    def __init__(self, quality: int) -> None:
        self.quality = quality
        self._ctx: av.VideoCodecContext | None = None
        self._size = (0, 0)

    def encode(self, frame: av.VideoFrame, width: int, height: int) -> bytes:
        if self._ctx is None or self._size != (width, height):
            ctx = av.CodecContext.create("mjpeg", "w")
            assert isinstance(ctx, av.VideoCodecContext)
            ctx.width, ctx.height = width, height
            ctx.pix_fmt = "yuvj420p"
            ctx.time_base = fractions.Fraction(1, 1)
            ctx.qmin = ctx.qmax = self.quality  # a fixed quantiser scale (ffmpeg's -q:v)
            ctx.open()
            self._ctx, self._size = ctx, (width, height)
        picture = frame.reformat(width, height, format="yuvj420p")
        picture.pts = None
        # a decoded frame carries its stream's time base (1/10240 say) and duration, which
        # the encoder refuses after the first frame: it is the encoder's frame now
        picture.time_base = self._ctx.time_base
        return b"".join(bytes(p) for p in self._ctx.encode(picture))


class SnapshotRing:
    def __init__(
        self,
        stream: str,
        *,
        fps: float,
        frames: int,
        width: int,
        quality: int,
        max_bytes: int,
    ) -> None:
        if frames < 1 or max_bytes < 1 or fps <= 0:
            raise ValueError("a snapshot ring needs fps > 0, frames >= 1, max_bytes >= 1")
        self.stream = stream
        self.fps = fps
        self.quality = quality
        self.period_ns = max(1, round(NS / fps))
        self.frames = frames
        self.width = width
        self.max_bytes = max_bytes
        self.taken = 0  # frames encoded
        self.encoded_bytes = 0  # their JPEG bytes, all told
        self.encode_ns = 0  # time spent scaling and encoding, all told
        self.evicted = 0  # JPEGs dropped to keep within frames / max_bytes
        self.failed = 0  # frames the encoder refused
        self._items: deque[Snapshot] = deque()
        self._bytes = 0
        self._last_slot: int | None = None
        self._lock = threading.Lock()  # the items and the counters
        self._encoder = JpegEncoder(quality)
        self._encoding = threading.Lock()  # one encode at a time (a source's pool)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        return self._bytes

    def offer(self, frame: av.VideoFrame, pts_ns: int) -> Snapshot | None:
        """Take ``frame`` if its slot has none yet; the snapshot made, or None."""
        slot = pts_ns // self.period_ns
        with self._lock:
            if slot == self._last_slot:
                return None
            self._last_slot = slot
        w, h = scaled(frame.width, frame.height, self.width)
        t0 = time.perf_counter_ns()
        try:
            with self._encoding:
                jpeg = self._encoder.encode(frame, w, h)
        except (av.FFmpegError, ValueError):
            self.count_failed()
            return None
        snap = Snapshot(self.stream, pts_ns, jpeg, w, h)
        self.keep(snap, time.perf_counter_ns() - t0)
        return snap

    def keep(self, snap: Snapshot, encode_ns: int = 0) -> None:
        """Hold ``snap``, a JPEG made elsewhere (a capture process's) or by :meth:`offer`,
        which took ``encode_ns`` to make; the oldest go past ``frames`` / ``max_bytes``."""
        jpeg = snap.jpeg
        with self._lock:
            self.encode_ns += encode_ns
            self.taken += 1
            self.encoded_bytes += len(jpeg)
            self._items.append(snap)
            self._bytes += len(jpeg)
            while len(self._items) > self.frames or (
                self._bytes > self.max_bytes and len(self._items) > 1
            ):
                self._bytes -= len(self._items.popleft().jpeg)
                self.evicted += 1

    def latest(self) -> Snapshot | None:
        with self._lock:
            return self._items[-1] if self._items else None

    def items(self) -> list[Snapshot]:
        """The JPEGs held, oldest first (a copy)."""
        with self._lock:
            return list(self._items)

    def at(self, start_ns: int, end_ns: int, slack_ns: int) -> Snapshot | None:
        """The newest JPEG inside ``[start_ns, end_ns)`` (a window's span); else the one
        nearest it within ``slack_ns``; else None (the ring no longer, or not yet, covers
        it)."""
        best: Snapshot | None = None
        best_gap = slack_ns + 1
        for s in reversed(self.items()):
            if start_ns <= s.pts_ns < end_ns:
                return s
            gap = s.pts_ns - end_ns if s.pts_ns > end_ns else start_ns - s.pts_ns
            if gap < best_gap:
                best, best_gap = s, gap
        return best

    def count_failed(self, n: int = 1) -> None:
        """Frames that could not become snapshots (an encoder's refusal, or a capture
        process's JPEGs the node did not take in time)."""
        with self._lock:
            self.failed += n

    def counters(self) -> dict[str, int]:
        with self._lock:
            return {
                "held": len(self._items),
                "held_bytes": self._bytes,
                "taken": self.taken,
                "encoded_bytes": self.encoded_bytes,
                "encode_ms": self.encode_ns // 1_000_000,
                "evicted": self.evicted,
                "failed": self.failed,
            }
