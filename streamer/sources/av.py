"""Files, network streams and V4L2 cameras through PyAV (FFmpeg).

One :class:`AVSource` reads ONE container in ONE demuxer thread and yields both
:class:`~streamer.frames.VideoFrame` and :class:`~streamer.frames.AudioChunk` when video
and audio name the same URL; both tracks share one :class:`~.clockmap.PtsMapper`.

    file:///abs/clip.mp4          realtime (paced to the wall clock) or unpaced; loop
    udp://host:port[?...]         MPEG-TS unless ``format=`` is in the query
    rtsp://, http(s)://, srt://   with open/read timeouts
    v4l2:///dev/videoN?size=640x480&fps=30&input_format=mjpeg

The thread owns the container (open, read, close) and hands converted items to the loop
through a :class:`~.handoff.Handoff`: drop-oldest when live, blocking when an unpaced file
is read as fast as possible. An unpaced file's audio is handed over in chunks of at least
one model audio segment (the decoder's 20-64 ms pieces joined while they are contiguous):
nobody waits on its latency, and each chunk costs the loop the same however long it is.
With ``slot_frames`` (what the node asks for), an unpaced file hands over only the frame
of each video slot that the aligner would keep (the one nearest the slot's centre), and
converts only that one: a 30 fps file read for a 4 fps model converts ~4 frames in 30.
PyAV's many exception types stop at this boundary and become
one-line :class:`~streamer.errors.SourceOpenError` / :class:`~streamer.errors.SourceError`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from pathlib import Path

import av
import av.container
import numpy as np
import numpy.typing as npt

from models.spec import ModelSpec
from streamer.clock import NODE_CLOCK, Clock
from streamer.errors import SourceError, SourceOpenError, SourcePermanentError
from streamer.frames import NS, AudioChunk, Item, Modality, VideoFrame
from streamer.snapshots.ring import FrameTap
from streamer.sources.avurls import (
    AV_ERRORS,
    SCHEMES,
    describe_av_error,
    file_path,
    network_options,
    permanent,
    v4l2_options,
)
from streamer.sources.base import DEFAULT_QUEUE
from streamer.sources.clockmap import PtsMapper, StaleFilter
from streamer.sources.convert import AudioConverter, video_to_rgb
from streamer.sources.handoff import Handoff, ItemSink
from streamer.timebase import frame_rank, slot_index, slot_ns

log = logging.getLogger(__name__)


class AVSource:
    """A PyAV container read by one demuxer thread; see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        video: bool,
        audio: bool,
        spec: ModelSpec,
        clock: Clock = NODE_CLOCK,
        stream: str = "",
        realtime: bool = True,
        loop: bool = False,
        open_timeout: float = 5.0,
        read_timeout: float = 5.0,
        queue_size: int = DEFAULT_QUEUE,
        slot_frames: bool = False,
        snapshot: FrameTap | None = None,
    ) -> None:
        if not (video or audio):
            raise ValueError("AVSource needs video, audio or both")
        self.url = url
        self.scheme = url.split(":", 1)[0]
        if self.scheme not in SCHEMES:
            raise SourceOpenError(url, f"unsupported scheme {self.scheme!r} for AVSource")
        self.stream = stream
        self.spec = spec
        self.clock = clock
        wanted: set[Modality] = set()
        if video:
            wanted.add("video")
        if audio:
            wanted.add("audio")
        self.modalities: frozenset[Modality] = frozenset(wanted)
        self.is_file = self.scheme == "file"
        self.realtime = realtime or not self.is_file
        self.loop = loop and self.is_file
        self.live = self.realtime  # network, devices and realtime files are paced
        self.slot_frames = slot_frames and not self.live
        self.snapshot = snapshot  # offered every decoded frame (the snapshot ring)
        self._slot_ns = slot_ns(spec.fps)
        self.skipped = 0  # unpaced frames another frame of their slot beat (slot_frames)
        self.open_timeout = open_timeout
        self.read_timeout = read_timeout
        self.queue_size = queue_size
        self.corrupt = 0  # packets that failed to decode and were skipped
        self._stale = StaleFilter()  # live items stamped no later than their predecessor
        self._dropped_before = 0  # by the hand-offs of earlier opens
        self._handoff: Handoff[Item] | None = None
        self._sink: ItemSink[Item] | None = None  # where the thread hands items: the hand-off
        self._thread: threading.Thread | None = None
        self._reset()

    def _reset(self) -> None:
        """Per-open state: a source may be opened again after close()."""
        self._stop = threading.Event()
        self._mapper = PtsMapper(self.clock, live=not self.is_file)
        self._stale.reset()
        self._video_next: float | None = None  # media time expected for the next frame
        self._audio_next: float | None = None  # media time of the next audio sample
        self._joined: list[AudioChunk] = []  # unpaced: contiguous chunks not handed over yet
        self._joined_n = 0  # their samples
        # slot_frames: the best frame yet of the newest slot, not converted yet
        self._held: tuple[int, tuple[int, int], av.VideoFrame] | None = None

    @property
    def dropped(self) -> int:
        """Items dropped: the oldest when the consumer fell behind, and stale live items."""
        queued = self._handoff.dropped if self._handoff is not None else 0
        return self._stale.dropped + self._dropped_before + queued

    # --- the event-loop side ------------------------------------------------------------

    async def open(self) -> None:
        if self._thread is not None:  # opened before: stop that reader, start afresh
            await self.close()
            self._thread = None
            if self._handoff is not None:
                self._dropped_before += self._handoff.dropped
            self._reset()
        loop = asyncio.get_running_loop()
        self._handoff = self._sink = Handoff(self.queue_size, loop=loop, blocking=not self.live)
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name=f"av:{self.url}", daemon=True
        )
        self._thread.start()
        try:
            # PyAV's own timeouts bound this; the margin only guards against a stuck open.
            async with asyncio.timeout(self.open_timeout + 2.0):
                await asyncio.wrap_future(ready)
        except TimeoutError:
            self._stop.set()
            raise SourceOpenError(self.url, f"no data within {self.open_timeout} s") from None
        except BaseException:
            self._stop.set()
            self._handoff.close()
            raise

    async def recv(self) -> Item:
        if self._handoff is None:
            raise SourceError(self.url, "recv() before open()")
        return await self._handoff.get()

    def recv_nowait(self) -> Item | None:
        return None if self._handoff is None else self._handoff.get_nowait()

    async def close(self) -> None:
        self._stop.set()
        if self._handoff is not None:
            self._handoff.close()  # unblocks a producer waiting for space
        thread = self._thread
        if thread is not None and thread.is_alive():
            # a network read returns within read_timeout; the thread closes the container
            await asyncio.to_thread(thread.join, self.read_timeout + 1.0)
            if thread.is_alive():
                log.warning("%s: demuxer thread still busy after close", self.url)

    # --- another owner's thread (a capture process, streamer.capture.child) -----------

    def serve(self, sink: ItemSink[Item], ready: concurrent.futures.Future[None]) -> None:
        """Read the container in the CALLING thread, handing items to ``sink`` (not to
        the event loop); ``ready`` resolves once it is open. Returns at the end, on an
        error (both given to ``sink``) or after :meth:`stop`."""
        self._sink = sink
        self._run(ready)

    def stop(self) -> None:
        """Make :meth:`serve` return (within a read timeout); any thread."""
        self._stop.set()

    @property
    def stale(self) -> int:
        """Live items dropped as stamped no later than their predecessor."""
        return self._stale.dropped

    # --- the demuxer thread -----------------------------------------------------------

    def _open_container(self) -> av.container.InputContainer:
        """Open the container (in the demuxer thread); SourceOpenError on failure."""
        try:
            if self.is_file:
                path = file_path(self.url)
                if not Path(path).is_file():
                    raise SourceOpenError(self.url, "no such file")
                return av.open(path, mode="r")
            # PyAV's open timeout applies to the open and again to the probe: halve it
            timeout = (self.open_timeout / 2, self.read_timeout)
            if self.scheme == "v4l2":
                device, options = v4l2_options(self.url)
                if not Path(device).exists():
                    raise SourceOpenError(self.url, "no such device")
                return av.open(device, mode="r", format="v4l2", options=options, timeout=timeout)
            target, fmt, options = network_options(self.url, self.read_timeout)
            return av.open(target, mode="r", format=fmt, options=options, timeout=timeout)
        except SourceOpenError:
            raise
        except AV_ERRORS as e:
            # permission denied, a protocol this FFmpeg lacks: no retry will cure them
            error = SourcePermanentError if permanent(e) else SourceOpenError
            raise error(self.url, describe_av_error(e, timeout=self.open_timeout)) from None

    def _select(
        self, container: av.container.InputContainer
    ) -> tuple[av.VideoStream | None, av.AudioStream | None]:
        if not container.streams:
            raise SourceOpenError(self.url, "no media streams")
        vs = container.streams.video[0] if container.streams.video else None
        aus = container.streams.audio[0] if container.streams.audio else None
        if "video" in self.modalities and vs is None:
            raise SourceOpenError(self.url, "no video stream")
        if "audio" in self.modalities and aus is None:
            raise SourceOpenError(self.url, "no audio stream")
        if "video" not in self.modalities:
            vs = None
        if "audio" not in self.modalities:
            aus = None
        if vs is not None and not self.live:
            vs.thread_type = "AUTO"  # frame threads add latency: unpaced files only
        return vs, aus

    def _run(self, ready: concurrent.futures.Future[None]) -> None:
        assert self._sink is not None
        container: av.container.InputContainer | None = None
        try:
            try:
                container = self._open_container()
                streams = self._select(container)
            except SourceOpenError as e:
                _settle(ready, e)
                return
            if not _settle(ready, None) or self._stop.is_set():
                return
            while not self._stop.is_set():
                self._pump(container, *streams)
                if not self.loop or self._stop.is_set():
                    break
                container.close()
                container = None
                container = self._open_container()
                streams = self._select(container)
                self._mapper.next_pass()
                self._video_next = self._audio_next = None
            if not self._stop.is_set():
                self._sink.put_end(f"{self.url}: end of file")
        except SourceError as e:
            self._sink.put_error(e)
        except AV_ERRORS as e:
            if not self._stop.is_set():
                log.info("%s: read failed: %r", self.url, e)
            self._sink.put_error(
                SourceError(self.url, describe_av_error(e, timeout=self.read_timeout))
            )
        except BaseException as e:  # a bug: never leave recv() waiting forever
            log.exception("%s: demuxer thread failed", self.url)
            _settle(ready, SourceOpenError(self.url, f"internal error: {e!r}"))
            self._sink.put_error(SourceError(self.url, f"internal error: {e!r}"))
        finally:
            if container is not None:
                container.close()

    def _pump(
        self,
        container: av.container.InputContainer,
        vs: av.VideoStream | None,
        aus: av.AudioStream | None,
    ) -> None:
        """Demux and decode one pass over the container (until EOF or stop); the audio
        joined so far is handed over at its end, also when a read fails."""
        converter = AudioConverter(self.spec.audio_rate) if aus is not None else None
        frame_s = 1.0 / float(vs.average_rate) if vs is not None and vs.average_rate else 0.0
        selected = [s for s in (vs, aus) if s is not None]
        try:
            for packet in container.demux(*selected):
                if self._stop.is_set():
                    return
                try:
                    frames = packet.decode()
                except (av.error.InvalidDataError, av.error.UndefinedError) as e:
                    self.corrupt += 1
                    log.debug("%s: skipped a packet that failed to decode: %s", self.url, e)
                    continue
                for frame in frames:
                    if isinstance(frame, av.VideoFrame):
                        self._video(frame, frame_s)
                    elif isinstance(frame, av.AudioFrame) and converter is not None:
                        self._audio(converter.convert(frame))
            if converter is not None and not self._stop.is_set():
                self._audio(converter.convert(None))
        finally:
            self._hand_over_held()
            self._hand_over_joined()

    def _video(self, frame: av.VideoFrame, frame_s: float) -> None:
        t = frame.time
        if t is None:
            t = self._video_next if self._video_next is not None else 0.0
        self._video_next = t + frame_s
        ts = self._mapper.map(t, frame_s)
        if self._stale.stale("video", ts):
            return
        if self.snapshot is not None:
            self.snapshot(frame, ts)
        if not self.slot_frames:
            self._deliver(
                VideoFrame(self.stream, ts, video_to_rgb(frame, self.spec.image_size)), ts
            )
            return
        k, rank = slot_index(ts, self._slot_ns), frame_rank(ts, self._slot_ns)
        held = self._held
        if held is not None and held[0] == k:
            self.skipped += 1
            if rank < held[1]:
                self._held = (k, rank, frame)
            return
        self._hand_over_held()
        self._held = (k, rank, frame)

    def _hand_over_held(self) -> None:
        """slot_frames: convert and hand over the frame held for its slot."""
        held, self._held = self._held, None
        if held is None or self._stop.is_set():
            return
        ts = held[1][1]  # a rank ends with the pts
        self._deliver(VideoFrame(self.stream, ts, video_to_rgb(held[2], self.spec.image_size)), ts)

    def _audio(self, pieces: list[tuple[float | None, npt.NDArray[np.float32]]]) -> None:
        rate = self.spec.audio_rate
        for start, samples in pieces:
            if start is None:
                start = self._audio_next if self._audio_next is not None else 0.0
            seconds = len(samples) / rate
            self._audio_next = start + seconds
            ts = self._mapper.map(start, seconds)
            if self._stale.stale("audio", ts):
                continue
            chunk = AudioChunk(self.stream, ts, samples, rate)
            if self.live:
                self._deliver(chunk, chunk.end_ns)
                continue
            if self._joined and abs(ts - self._joined[-1].end_ns) * 2 * rate > NS:
                self._hand_over_joined()  # a gap (or overlap) of half a sample or more
            self._joined.append(chunk)
            self._joined_n += len(samples)
            if self._joined_n >= self.spec.segment_samples:
                self._hand_over_joined()

    def _hand_over_joined(self) -> None:
        """The unpaced audio joined so far, as one chunk stamped at its first sample."""
        if not self._joined or self._stop.is_set():
            return
        first = self._joined[0]
        if len(self._joined) == 1:
            chunk = first
        else:
            samples = np.concatenate([c.samples for c in self._joined])
            chunk = AudioChunk(self.stream, first.pts_ns, samples, first.rate)
        self._joined = []
        self._joined_n = 0
        self._deliver(chunk, chunk.end_ns)

    def _deliver(self, item: Item, release_ns: int) -> None:
        """Pace a realtime file (sleep until the item is due), then hand it to the loop."""
        assert self._sink is not None
        if self.is_file and self.realtime:
            delay = (release_ns - self.clock.now_ns()) / NS
            if delay > 0 and self._stop.wait(delay):
                return
        if not self._sink.put(item):
            self._stop.set()  # closed under us: stop reading


def _settle(ready: concurrent.futures.Future[None], error: BaseException | None) -> bool:
    """Resolve the open() future from the thread; False if open() gave up already."""
    try:
        if error is None:
            ready.set_result(None)
        else:
            ready.set_exception(error)
    except concurrent.futures.InvalidStateError:
        return False
    return True
