"""One stream: its sources feed its aligner; ready windows go to the inference runner.

One task per source reads items (with those already queued behind, in one batch) and
pushes them into the aligner; the stream's text (a source too) follows the others: it
neither paces the stream nor keeps it running once they have ended. A ticker task emits
windows whose deadline (``end + max_delay``) passes while the sources are silent. Both
poll and submit under one lock, so windows leave in start order.

:meth:`StreamPipeline.set_enabled` pauses a stream (``P/N/S/set/enabled OFF``): its
source tasks are cancelled (each source closed, its modalities offline), the aligner
hands over what it holds (cut at that instant: ``partial``) and the stream waits; ``ON``
runs its source tasks afresh (the sources that had not ended), the aligner going on from
where it was: the windows of the pause are empty ones, skipped like any other (no
prediction, no ``seq``: not a loss). A file source opens again at its start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from models.spec import ModelSpec
from streamer.align.aligner import StreamAligner
from streamer.backoff import Backoff
from streamer.clock import Clock
from streamer.config import StreamConfig, WindowConfig
from streamer.errors import SourceEnded, SourceError, SourceOpenError, SourcePermanentError
from streamer.frames import Modality, Window, modality_of
from streamer.inference.runner import InferenceRunner
from streamer.sources.base import Source, recv_batch
from streamer.stats import StreamStats

log = logging.getLogger(__name__)

StatusFn = Callable[[str, Modality, bool], None]
REOPEN_CAP_S = 2.0
# Items a source task pushes before it polls the aligner: what had queued up behind the
# first (a burst from an unpaced file or a loop busy elsewhere); one poll covers them all.
PUMP_BATCH = 32


def configured_modalities(cfg: StreamConfig, text: bool) -> list[Modality]:
    mods: list[Modality] = []
    if cfg.video is not None:
        mods.append("video")
    if cfg.audio is not None:
        mods.append("audio")
    if text:
        mods.append("text")
    return mods


class StreamPipeline:
    def __init__(
        self,
        cfg: StreamConfig,
        *,
        window: WindowConfig,
        spec: ModelSpec,
        clock: Clock,
        sources: Sequence[Source],
        text: Source | None = None,
        runner: InferenceRunner,
        stats: StreamStats,
        status: StatusFn,
        backoff: Callable[[], Backoff] = lambda: Backoff(base=0.2, cap=REOPEN_CAP_S),
    ) -> None:
        """``backoff`` makes each source's reopen backoff (a test's waits on a fake clock)."""
        self.id = cfg.id
        self.cfg = cfg
        self._clock = clock
        self.sources = list(sources)  # video and audio
        self.text = text
        self._runner = runner
        self._stats = stats
        self._status = status
        self._backoff = backoff
        self.modalities = configured_modalities(cfg, text is not None)
        self.aligner = StreamAligner(
            cfg.id,
            length_ns=window.length_ns,
            hop_ns=window.hop_ns,
            max_delay_ns=window.max_delay_ns,
            fps=spec.fps,
            audio_rate=spec.audio_rate,
            modalities=self.modalities,
        )
        # A stream paced by the wall clock drops under overload; an unpaced replay waits.
        self.realtime = any(s.live for s in self.sources) or not self.sources
        self._text_live = False
        self._lock = asyncio.Lock()
        self._poke = asyncio.Event()
        self._armed: int | None = None  # the deadline the ticker sleeps toward, if any
        self._ended = asyncio.Event()
        self._open_sources = len(self.sources)
        self._text_task: asyncio.Task[None] | None = None
        # pausing (set_enabled): the gate the source tasks wait behind, the tasks of the
        # current run, the sources that have ended for good, the pause under way
        self.enabled = True
        self._gate = asyncio.Event()
        self._gate.set()
        self._running: list[asyncio.Task[None]] = []
        self._done: set[int] = set()  # id() of each source that ended
        self._pausing = False
        self._paused = asyncio.Event()  # the pause asked for is complete (or the stream ended)
        if "text" in self.modalities:
            self.aligner.set_live("text", False)

    def _online(self, src: Source, live: bool) -> None:
        """``src`` opened (or failed): its modalities' status; text gates windows."""
        for m in src.modalities:
            self._status(self.id, m, live)
        if src is self.text:
            self._text_live = live
            # Text gates windows only where time is the wall clock's; an unpaced replay
            # runs ahead of it, and text simply joins the windows still open.
            self.aligner.set_live("text", live and self.realtime)

    # -- the tasks -----------------------------------------------------------------------
    async def run(self) -> None:
        """Until every source has ended and the last window is handed over."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._feed(), name=f"{self.id}-sources")
                tg.create_task(self._tick(), name=f"{self.id}-ticker")
        finally:
            self._paused.set()  # a pause waiting on an ended stream returns
        self._runner.forget(self.id)  # ended: its cache goes once its last window is out

    async def set_enabled(self, on: bool) -> None:
        """Pause (False) or resume (True) the stream; a pause returns once its sources are
        closed and the aligner has handed over what it held."""
        if on == self.enabled:
            return
        self.enabled = on
        if on:
            self._gate.set()
            return
        self._gate.clear()
        self._paused.clear()
        self._pausing = True
        for t in self._running:
            t.cancel()
        if self._running:  # else: not started (or between runs): nothing to close
            await self._paused.wait()

    async def _feed(self) -> None:
        """The source tasks, a run of them per enabled spell, until the sources end."""
        while not self._ended.is_set():
            await self._gate.wait()
            if not self._gate.is_set():  # paused again before this task woke
                continue
            self._pausing = False
            async with asyncio.TaskGroup() as tg:
                for i, src in enumerate(self.sources):
                    if id(src) not in self._done:
                        self._running.append(
                            tg.create_task(self._read(src), name=f"{self.id}-source-{i}")
                        )
                if self.text is not None:
                    self._text_task = tg.create_task(self._read(self.text), name=f"{self.id}-text")
                    self._running.append(self._text_task)
            self._running.clear()
            if self._pausing and not self._ended.is_set():
                await self.flush()  # what it holds, cut now; the ticker sleeps on
                self._paused.set()

    async def flush(self) -> None:
        """Shutdown: hand over every window still holding data; those not ready yet are
        cut at this instant (``partial``)."""
        async with self._lock:
            await self._submit(self.aligner.flush(self._clock.now_ns()))

    async def _read(self, src: Source) -> None:
        # full jitter up to 2 s: a sender that comes back is read again within ~2 s + probe;
        # text's open() waits for its connection, which backs off on its own: no wait here,
        # so text is online again as soon as the subscriptions are
        backoff = self._backoff() if src is not self.text else Backoff(base=0.0, cap=0.0)
        try:
            while True:
                try:
                    await src.open()
                except SourcePermanentError as e:  # no retry would cure it: said once
                    self._stats.errors += 1
                    log.error("stream %s: %s (not retried)", self.id, e)
                    return
                except SourceOpenError as e:
                    self._stats.errors += 1
                    log.error("stream %s: %s", self.id, e)
                    if not src.live:
                        return
                    await backoff.sleep()
                    continue
                self._online(src, True)
                try:
                    await self._pump(src, backoff)
                    return
                except SourceError as e:
                    if src is self.text:  # an outage the connection logs once, for all
                        log.debug("stream %s: %s; reopening", self.id, e)
                    elif not src.live:  # a corrupt file does not heal: report it, end it
                        self._stats.errors += 1
                        log.error("stream %s: %s", self.id, e)
                        return
                    else:
                        self._stats.errors += 1
                        log.warning("stream %s: %s; reopening", self.id, e)
                    self._online(src, False)
                    await src.close()
                    await backoff.sleep()
        finally:
            await src.close()
            if self._pausing:  # paused: offline, to be opened again on resume
                self._online(src, False)
            elif src is not self.text:
                self._done.add(id(src))
                self._online(src, False)
                for m in src.modalities:
                    self.aligner.end(m)
                self._source_done()
            elif not self._ended.is_set():  # stopped; else it followed the stream's end
                self._online(src, False)  # (and its status stays: the connection is up)

    async def _pump(self, src: Source, backoff: Backoff) -> None:
        first = True
        while True:
            try:
                items = await recv_batch(src, PUMP_BATCH)
            except SourceEnded:
                return
            if first:
                backoff.reset()
                first = False
            async with self._lock:
                for item in items:
                    self._stats.count_in(modality_of(item))
                    self.aligner.push(item)
                now = self._clock.now_ns()
                if self._text_live and self.realtime:
                    self.aligner.heartbeat("text", now)
                await self._submit(self.aligner.poll(now))
                # the ticker only matters for a deadline sooner than the one it sleeps
                # toward; waking it for every frame and audio chunk costs a task switch
                deadline = self.aligner.next_deadline_ns()
                if deadline is not None and (self._armed is None or deadline < self._armed):
                    self._poke.set()

    def _source_done(self) -> None:
        self._open_sources -= 1
        if self._open_sources <= 0:
            if "text" in self.modalities:
                self.aligner.end("text")
            if self._text_task is not None:
                self._text_task.cancel()  # text follows the stream
            self._ended.set()
            self._poke.set()

    async def _tick(self) -> None:
        while True:
            async with self._lock:
                self._poke.clear()
                now = self._clock.now_ns()
                if self._text_live and self.realtime:
                    self.aligner.heartbeat("text", now)
                await self._submit(self.aligner.poll(now))
                if self._ended.is_set():
                    await self._submit(self.aligner.flush())
                    return
                deadline = self._armed = self.aligner.next_deadline_ns()
            timeout = None if deadline is None else max(0.0, (deadline - now) / 1e9)
            # asyncio.timeout, never wait_for: Python 3.11's wait_for returns normally when
            # a cancel meets the wake it waits for, and the cancelled task then runs on (a
            # node with 32 capture processes hung at its stop that way)
            try:
                async with asyncio.timeout(timeout):
                    await self._poke.wait()
            except TimeoutError:
                pass

    async def _submit(self, windows: list[Window]) -> None:
        for w in windows:
            if self.realtime:
                self._runner.submit_nowait(w)  # a full queue drops its oldest window
            else:
                await self._runner.submit(w)
