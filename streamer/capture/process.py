"""The node's side of a capture process: a :class:`~streamer.sources.base.Source`.

:class:`ProcessSource` is what :func:`~streamer.sources.factory.open_sources` returns
for a PyAV or ``mic:`` URL under ``capture: process``. Each ``open()`` creates a shared-memory ring
(:mod:`.ring`), starts :func:`.child.run` in a capture process and waits for its
``ready``; ``recv()`` copies items out of the ring. The event loop is woken by
``loop.add_reader`` on the wake pipe, the control pipe and the process's sentinel
(readable when it dies): no polling.

Capture processes are forked from a fork server (``multiprocessing``'s ``forkserver``
context, :mod:`.forkserver`): a fresh interpreter started once per node process,
never a fork of the node with its torch and threads, that has imported numpy and PyAV
(:data:`PRELOAD`). A capture process then starts in milliseconds instead of paying
about 0.3 s of CPU for those imports at every open.

A child that dies (SIGKILL, SIGSEGV, an exit) or stalls (the watchdog: no item for
``watchdog_s`` while live, neither an item nor a heartbeat for an unpaced file) makes
``recv()`` raise :class:`~streamer.errors.SourceError` once the items it wrote are read,
so the pipeline reopens it with its backoff, its status offline and back. ``close()``
stops the child (killed if it does not exit, at once if it stalled) and always unlinks
the ring, whatever became of the child.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from models.spec import ModelSpec
from streamer.capture import child
from streamer.capture.child import BEAT_S, ChildParams
from streamer.capture.forkserver import capture_context, ensure_fork_server, main_left_alone
from streamer.capture.ring import BEAT, CORRUPT, SKIPPED, SNAPS_LOST, STALE, VIDEO, ShmRing
from streamer.clock import NODE_CLOCK, NodeClock
from streamer.errors import SourceEnded, SourceError, SourceOpenError, SourcePermanentError
from streamer.frames import AudioChunk, Item, Modality, VideoFrame
from streamer.snapshots.ring import Snapshot, SnapshotRing
from streamer.sources.avurls import SCHEMES

log = logging.getLogger(__name__)

PROCESS_SCHEMES = (*SCHEMES, "mic")  # what a capture process can serve
DEFAULT_SLOTS = 32
SPAWN_S = 10.0  # the fork server's first start (numpy and PyAV), on a loaded machine
JOIN_S = 3.0  # a stopped child's exit, before it is killed


class ProcessSource:
    def __init__(
        self,
        url: str,
        *,
        video: bool,
        audio: bool,
        spec: ModelSpec,
        clock: NodeClock = NODE_CLOCK,
        stream: str = "",
        realtime: bool = True,
        loop: bool = False,
        open_timeout: float = 5.0,
        read_timeout: float = 5.0,
        slots: int = DEFAULT_SLOTS,
        slot_frames: bool = False,
        watchdog_s: float | None = None,
        snapshots: SnapshotRing | None = None,
    ) -> None:
        if not (video or audio):
            raise ValueError("ProcessSource needs video, audio or both")
        self.url = url
        scheme = url.split(":", 1)[0]
        if scheme not in PROCESS_SCHEMES:
            raise SourceOpenError(url, f"unsupported scheme {scheme!r} for a capture process")
        mods: set[Modality] = set()
        if video:
            mods.add("video")
        if audio:
            mods.add("audio")
        self.modalities: frozenset[Modality] = frozenset(mods)
        is_file = scheme == "file"
        self.live = realtime or not is_file  # as AVSource decides
        self.spec = spec
        self.slots = slots
        self.watchdog_s = watchdog_s if watchdog_s is not None else max(read_timeout * 2, 5.0)
        self._audio_max = max(spec.segment_samples * 2, spec.audio_rate // 4)
        self._payload = max(spec.image_size**2 * 3 if video else 0, self._audio_max * 4)
        self.snapshots = snapshots if video else None  # the child encodes, the node keeps
        snaps = self.snapshots
        self._params = ChildParams(
            url, video, audio, spec, clock.offset_ns, stream, realtime, loop and is_file,
            open_timeout, read_timeout, slot_frames and not self.live, self._audio_max,
            snaps.fps if snaps is not None else 0.0, snaps.width if snaps is not None else 0,
            snaps.quality if snaps is not None else 5,
        )  # fmt: skip
        self._open_timeout = open_timeout
        self.stream = stream
        self.restarts = 0  # capture processes that died or stalled
        self._before = {"dropped": 0, "corrupt": 0, "skipped": 0}  # earlier opens
        self._ring: ShmRing | None = None
        self._proc: BaseProcess | None = None
        self._sentinel: int | None = None  # readable once the child has exited
        self._wake: int | None = None
        self._space: int | None = None
        self._ctrl: Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: set[asyncio.Future[None]] = set()
        self._msgs: list[tuple[object, ...]] = []
        self._dead = False
        self._stalled = False
        self._progress = 0.0  # monotonic s of the last item (or heartbeat)
        self._beat = 0

    # --- counters -----------------------------------------------------------------------

    def _count(self, name: str, field: int | None) -> int:
        ring = self._ring
        now = 0
        if ring is not None:
            now = ring.dropped + ring.counter(STALE) if field is None else ring.counter(field)
        return self._before[name] + now

    @property
    def dropped(self) -> int:
        """Items the ring overwrote unread (drop-oldest), and stale live items."""
        return self._count("dropped", None)

    @property
    def corrupt(self) -> int:
        return self._count("corrupt", CORRUPT)

    @property
    def skipped(self) -> int:
        return self._count("skipped", SKIPPED)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # --- open / close -------------------------------------------------------------------

    async def open(self) -> None:
        await self.close()
        await asyncio.to_thread(ensure_fork_server)  # its first start takes ~0.4 s
        self._loop = loop = asyncio.get_running_loop()
        self._msgs, self._dead, self._stalled = [], False, False
        self._ring = ShmRing.create(self.slots, self._payload)
        self._wake, wake_w = os.pipe()
        space_r: int | None = None
        if not self.live:  # an unpaced file waits for room: the node says when
            space_r, self._space = os.pipe()
            os.set_blocking(self._space, False)
        ctrl, ctrl_child = socket.socketpair()
        self._ctrl = Connection(ctrl.detach())
        # the child's ends, as Connections: multiprocessing hands their fds to the child
        ends = (Connection(wake_w, readable=False), Connection(ctrl_child.detach()),
                Connection(space_r, writable=False) if space_r is not None else None)  # fmt: skip
        proc = capture_context().Process(
            target=child.run, name=f"streamer-capture-{self.stream}",
            args=(self._params.to_json(), self._ring.name, *ends),
        )  # fmt: skip
        try:
            # on the loop, as every use of ``proc`` is: multiprocessing's Popen is not
            # thread-safe (a start polls every other child; two threads polling one child
            # both try to read its exit code, and one blocks for ever)
            with main_left_alone():
                proc.start()
        finally:
            for end in ends:  # the child has its own copies now
                if end is not None:
                    end.close()
        self._proc, self._sentinel = proc, proc.sentinel
        loop.add_reader(self._wake, self._on_wake)
        loop.add_reader(self._ctrl.fileno(), self._on_ctrl)
        loop.add_reader(self._sentinel, self._on_exit)
        deadline = time.monotonic() + self._open_timeout + 2.0 + SPAWN_S
        while not self._msgs:
            if self._dead:
                await self.close()
                raise SourceOpenError(self.url, f"capture process {self._exit()} while opening")
            left = deadline - time.monotonic()
            if left <= 0:
                self._stalled = True
                await self.close()
                raise SourceOpenError(self.url, f"no data within {self._open_timeout} s")
            await self._wait(left)
        msg = self._msgs.pop(0)
        if msg[0] == "open-error":
            await self.close()
            error = SourcePermanentError if msg[2] else SourceOpenError
            raise error(self.url, str(msg[1]))
        self._progress = time.monotonic()

    async def close(self) -> None:
        """Stop the child, kill it if it does not go, unlink the ring; idempotent."""
        proc, ring = self._proc, self._ring
        loop = self._loop if self._loop is not None and not self._loop.is_closed() else None
        if loop is not None:
            if self._wake is not None:
                loop.remove_reader(self._wake)
            if self._ctrl is not None and not self._ctrl.closed:
                loop.remove_reader(self._ctrl.fileno())
        if proc is not None and loop is not None:  # its sentinel says when it is gone
            if not self._dead and self._ctrl is not None and not self._stalled:
                try:
                    self._ctrl.send("stop")
                except OSError:
                    pass
                await self._until_dead(JOIN_S)
            if not self._dead:
                proc.kill()  # stalled, stopped by a signal, or stuck in a read
                await self._until_dead(JOIN_S)
            if self._dead:
                proc.close()  # its exit code read, its sentinel closed
            else:
                loop.remove_reader(proc.sentinel)
                log.warning("%s: capture process %s still there after SIGKILL", self.url, proc.pid)
        for fd in (self._wake, self._space):
            if fd is not None:
                os.close(fd)
        if self._ctrl is not None:
            self._ctrl.close()
        self._proc = self._wake = self._space = self._sentinel = self._ctrl = None
        if ring is not None:
            for name, field in (("corrupt", CORRUPT), ("skipped", SKIPPED)):
                self._before[name] += ring.counter(field)
            self._before["dropped"] += ring.dropped + ring.counter(STALE)
            if self.snapshots is not None and ring.counter(SNAPS_LOST):
                self.snapshots.count_failed(ring.counter(SNAPS_LOST))
            self._ring = None
            ring.close()  # the owner unlinks it
        self._set()

    # --- reading ------------------------------------------------------------------------

    def recv_nowait(self) -> Item | None:
        ring = self._ring
        slot = ring.read() if ring is not None else None
        if slot is None:
            return None
        if self._space is not None:  # room for a producer that waits for it
            try:
                os.write(self._space, b"\x01")
            except (BlockingIOError, BrokenPipeError):
                pass  # bytes are pending, or the producer is done: items left to read
        self._progress = time.monotonic()
        kind, pts, data = slot
        if kind == VIDEO:
            return VideoFrame(self.stream, pts, data)  # type: ignore[arg-type]
        return AudioChunk(self.stream, pts, data, self.spec.audio_rate)  # type: ignore[arg-type]

    async def recv(self) -> Item:
        while True:
            if self._ring is None:
                raise SourceError(self.url, "recv() before open()")
            item = self.recv_nowait()
            if item is not None:
                return item
            if self._msgs:  # after the items written before it
                kind, *rest = self._msgs.pop(0)
                if kind == "end":
                    raise SourceEnded(str(rest[0]))
                raise SourceError(self.url, str(rest[0]))
            if self._dead:
                if self._ctrl is not None and not self._ctrl.closed:
                    self._on_ctrl()  # what it said before it went
                if self._msgs:
                    continue
                self.restarts += 1
                raise SourceError(self.url, f"capture process {self._exit()}")
            beat = self._ring.counter(BEAT)
            if beat != self._beat and not self.live:  # an unpaced file's child at work
                self._beat, self._progress = beat, time.monotonic()
            left = self._progress + self.watchdog_s - time.monotonic()
            if left <= 0:
                self._stalled = True
                self.restarts += 1
                raise SourceError(
                    self.url, f"capture process stalled: nothing for {self.watchdog_s:g} s"
                )
            await self._wait(min(left, BEAT_S * 2) if not self.live else left)

    async def _wait(self, seconds: float) -> None:
        """Until something happens (an item, a message, the child's exit) or ``seconds``."""
        assert self._loop is not None
        fut = self._loop.create_future()
        self._waiters.add(fut)
        try:  # asyncio.timeout, never wait_for (StreamPipeline._tick)
            async with asyncio.timeout(seconds):
                await fut
        except TimeoutError:
            pass
        finally:
            self._waiters.discard(fut)

    async def _until_dead(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._dead and (left := deadline - time.monotonic()) > 0:
            await self._wait(left)

    def _set(self) -> None:
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)

    def _on_wake(self) -> None:
        assert self._wake is not None and self._loop is not None
        try:
            data = os.read(self._wake, 65536)
        except BlockingIOError:
            return
        if not data:  # the child's end closed: it exited (the pidfd says how)
            self._loop.remove_reader(self._wake)
        self._set()

    def _on_ctrl(self) -> None:
        assert self._ctrl is not None and self._loop is not None
        try:
            while self._ctrl.poll():
                msg = self._ctrl.recv()
                if msg[0] == "snap":
                    self._keep_snapshot(*msg[1:])
                else:
                    self._msgs.append(msg)
        except (EOFError, OSError):
            self._loop.remove_reader(self._ctrl.fileno())
        self._set()

    def _keep_snapshot(self, pts_ns: int, jpeg: bytes, w: int, h: int, encode_ns: int) -> None:
        if self.snapshots is not None:
            self.snapshots.keep(Snapshot(self.stream, pts_ns, jpeg, w, h), encode_ns)

    def _on_exit(self) -> None:
        assert self._sentinel is not None and self._loop is not None
        self._loop.remove_reader(self._sentinel)
        self._dead = True
        self._set()

    def _exit(self) -> str:
        code = self._proc.exitcode if self._proc is not None else None
        if code is not None and code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exited ({code})"
