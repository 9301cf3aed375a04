"""The capture process: one source (:class:`~streamer.sources.av.AVSource`, or a
:class:`~streamer.sources.mic.MicSource` recording) writing into a ring.

Forked from the node's fork server (:mod:`streamer.capture.forkserver`:
a fresh interpreter with numpy and PyAV imported, never a fork of the node, which has
torch and threads), :func:`run` attaches the parent's :class:`~.ring.ShmRing`, opens
the source and runs it in the main thread (its ``serve``: a demuxer loop, or a
microphone's watchdog while PortAudio's thread records),
converted items going to the ring instead of the event loop (:class:`RingSink`).
Around it:

* the wake pipe: one byte per item (non-blocking; a full pipe already wakes the node);
* the control pipe: the parent's ``stop``, and back ``ready`` / ``open-error`` /
  ``error`` / ``end`` messages (small and rare: pickled);
* a heartbeat thread: the monotonic time and the source's counters into the ring's
  header twice a second (the node's watchdog reads it);
* the space pipe, for an unpaced file only: a byte per item the node took, which a
  producer waiting for room sleeps on (backpressure instead of drops);
* snapshots, when the stream keeps them: the child's own one-slot
  :class:`~streamer.snapshots.ring.SnapshotRing` takes a frame per ``1 / fps`` at the
  source's resolution and encodes it, and a sender thread hands each JPEG to the node
  over the control pipe (``snap`` messages; at most :data:`SNAP_QUEUE` wait, more are
  counted in the ring's ``SNAPS_LOST``), so the decoder never waits for the node.

Timestamps are on the node clock: the parent's epoch offset over CLOCK_MONOTONIC.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import queue
import select
import signal
import threading
import time
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from typing import Protocol

import av
import numpy as np
import numpy.typing as npt

from models.spec import ModelSpec
from streamer.capture import ring as shm
from streamer.capture.ring import AUDIO, BEAT, CORRUPT, SKIPPED, STALE, VIDEO, ShmRing
from streamer.clock import OffsetClock
from streamer.errors import SourceError, SourceOpenError, SourcePermanentError
from streamer.frames import AudioChunk, Item, VideoFrame
from streamer.snapshots.ring import FrameTap, Snapshot, SnapshotRing
from streamer.sources.handoff import ItemSink

BEAT_S = 0.5
EXIT_GRACE_S = 2.0  # after stop, the demuxer's read returns or the process exits anyway
SNAP_QUEUE = 4  # snapshot JPEGs waiting for the control pipe, at most


@dataclass(frozen=True)
class ChildParams:
    url: str
    video: bool
    audio: bool
    spec: ModelSpec
    offset_ns: int
    stream: str
    realtime: bool
    loop: bool
    open_timeout: float
    read_timeout: float
    slot_frames: bool
    audio_max: int  # samples per audio slot; longer chunks take several slots
    snap_fps: float = 0.0  # snapshots: at most this many a second (0: none)
    snap_width: int = 0  # their width (0: the source's)
    snap_quality: int = 5  # their JPEG quantiser scale

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ChildParams:
        d = json.loads(text)
        spec = d.pop("spec")
        spec["labels"] = tuple(spec["labels"])
        return cls(spec=ModelSpec(**spec), **d)


class Served(Protocol):
    """What a capture process runs: a source that serves into a sink, with counters."""

    def serve(self, sink: ItemSink[Item], ready: concurrent.futures.Future[None]) -> None: ...
    def stop(self) -> None: ...
    @property
    def corrupt(self) -> int: ...
    @property
    def stale(self) -> int: ...
    @property
    def skipped(self) -> int: ...


def open_served(p: ChildParams, tap: FrameTap | None) -> Served:
    """The source ``p`` names, on the node clock (a microphone or a PyAV URL)."""
    clock = OffsetClock(p.offset_ns)
    if p.url.startswith("mic:"):
        from streamer.sources.mic import MicSource  # sounddevice loads when it opens

        return MicSource(p.url, spec=p.spec, clock=clock, stream=p.stream)
    from streamer.sources.av import AVSource

    return AVSource(
        p.url, video=p.video, audio=p.audio, spec=p.spec, clock=clock,
        stream=p.stream, realtime=p.realtime, loop=p.loop, open_timeout=p.open_timeout,
        read_timeout=p.read_timeout, slot_frames=p.slot_frames, snapshot=tap,
    )  # fmt: skip


class RingSink:
    """The :class:`~streamer.sources.handoff.ItemSink` of a capture process."""

    def __init__(
        self, ring: ShmRing, wake: int, space: int | None, ctrl: Connection, stop: threading.Event,
        audio_max: int,
    ) -> None:  # fmt: skip
        self.ring = ring
        self._wake = wake
        self._space = space  # None: live, never wait
        self._ctrl = ctrl
        self._stop = stop
        self._audio_max = audio_max
        self._ctrl_lock = threading.Lock()

    def put(self, item: Item) -> bool:
        if isinstance(item, VideoFrame):
            self._write(VIDEO, item.pts_ns, item.image.shape[0], item.image)
        elif isinstance(item, AudioChunk):
            s = item.samples
            for i in range(0, len(s), self._audio_max):
                pts = item.pts_ns + i * 1_000_000_000 // item.rate
                piece = s[i : i + self._audio_max]
                self._write(AUDIO, pts, len(piece), piece)
        return not self._stop.is_set()

    def _write(self, kind: int, pts: int, n: int, data: npt.NDArray[np.generic]) -> None:
        if self._space is not None:
            while self.ring.full() and not self._stop.is_set():
                ready, _, _ = select.select([self._space], [], [], BEAT_S)
                if ready:
                    os.read(self._space, 4096)
            if self._stop.is_set():
                return
        self.ring.write(kind, pts, n, data)
        try:
            os.write(self._wake, b"\x01")
        except BlockingIOError:
            pass  # bytes are pending: the node will look at the ring anyway

    def send(self, *msg: object) -> None:
        with self._ctrl_lock:
            try:
                self._ctrl.send(msg)
            except (BrokenPipeError, OSError):
                pass  # the node is gone or closed us

    def put_error(self, exc: BaseException) -> None:
        if isinstance(exc, SourceError):
            self.send("error", exc.problem)
        else:
            self.send("error", repr(exc))

    def put_end(self, message: str = "end of stream") -> None:
        self.send("end", message)


class SnapshotSender:
    """The child's snapshots: a one-slot ring that encodes (:meth:`tap`, the source's
    thread) and a thread that sends each JPEG to the node as ``("snap", pts_ns, jpeg,
    width, height, encode_ns)``; what finds :data:`SNAP_QUEUE` JPEGs waiting is lost,
    counted in the ring's ``SNAPS_LOST``."""

    def __init__(self, p: ChildParams, ring: ShmRing, sink: RingSink) -> None:
        self._snaps = SnapshotRing(
            p.stream, fps=p.snap_fps, frames=1, width=p.snap_width, quality=p.snap_quality,
            max_bytes=1 << 30,
        )  # fmt: skip
        self._ring = ring
        self._sink = sink
        self._queue: queue.Queue[tuple[Snapshot, int] | None] = queue.Queue(SNAP_QUEUE)
        self.lost = 0
        self._thread = threading.Thread(target=self._send, name="capture-snapshots", daemon=True)
        self._thread.start()

    def tap(self, frame: av.VideoFrame, pts_ns: int) -> None:
        before = self._snaps.encode_ns
        snap = self._snaps.offer(frame, pts_ns)
        if snap is None:
            return
        try:
            self._queue.put_nowait((snap, self._snaps.encode_ns - before))
        except queue.Full:
            self.lost += 1
            self._ring.set_counter(shm.SNAPS_LOST, self.lost)

    def _send(self) -> None:
        while (got := self._queue.get()) is not None:
            snap, encode_ns = got
            self._sink.send("snap", snap.pts_ns, snap.jpeg, snap.width, snap.height, encode_ns)

    def close(self) -> None:
        """Send what waits, then stop the thread (bounded: a node gone is no reader)."""
        try:
            self._queue.put(None, timeout=EXIT_GRACE_S)
        except queue.Full:
            return
        self._thread.join(EXIT_GRACE_S)


def main(p: ChildParams, ring_name: str, wake: int, space: int | None, ctrl: Connection) -> None:
    """The capture process: read ``p``'s source into the ring until stopped or done."""
    ring = ShmRing.attach(ring_name)
    os.set_blocking(wake, False)
    stop = threading.Event()
    sink = RingSink(ring, wake, space, ctrl, stop, p.audio_max)
    snaps = SnapshotSender(p, ring, sink) if p.video and p.snap_fps > 0 else None
    tap: FrameTap | None = snaps.tap if snaps is not None else None
    src = open_served(p, tap)

    def on_stop() -> None:  # the parent said stop, or went away
        try:
            ctrl.recv()
        except (EOFError, OSError):
            pass
        stop.set()
        src.stop()
        if not done.wait(EXIT_GRACE_S):
            # a read stuck in FFmpeg, a deadlocked PortAudio: the process goes, and the
            # device with it
            os._exit(0)

    def beat() -> None:
        while not done.wait(BEAT_S):
            ring.set_counter(CORRUPT, src.corrupt)
            ring.set_counter(STALE, src.stale)
            ring.set_counter(SKIPPED, src.skipped)
            ring.set_counter(BEAT, _mono())

    done = threading.Event()
    ready: concurrent.futures.Future[None] = concurrent.futures.Future()
    ready.add_done_callback(lambda f: _report_open(sink, f))
    threading.Thread(target=on_stop, name="capture-control", daemon=True).start()
    ring.set_counter(BEAT, _mono())
    beater = threading.Thread(target=beat, name="capture-heartbeat", daemon=True)
    beater.start()
    try:
        src.serve(sink, ready)
    finally:
        if snaps is not None:
            snaps.close()
        ring.set_counter(CORRUPT, src.corrupt)
        ring.set_counter(STALE, src.stale)
        ring.set_counter(SKIPPED, src.skipped)
        done.set()
        beater.join()
        ring.close()


def _report_open(sink: RingSink, f: concurrent.futures.Future[None]) -> None:
    e = f.exception()
    if e is None:
        sink.send("ready")
    elif isinstance(e, SourceOpenError):
        sink.send("open-error", e.problem, isinstance(e, SourcePermanentError))
    else:
        sink.send("open-error", repr(e), False)


def _mono() -> int:
    return time.monotonic_ns()


def run(params: str, ring_name: str, wake: Connection, ctrl: Connection,
        space: Connection | None) -> None:  # fmt: skip
    """A capture process's target: ``params`` (:meth:`ChildParams.to_json`), the ring's
    name and the pipes' ends that multiprocessing handed over."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the node's to handle
    main(ChildParams.from_json(params), ring_name, wake.fileno(),
         space.fileno() if space is not None else None, ctrl)  # fmt: skip
