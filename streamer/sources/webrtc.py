"""``webrtc``: the video, audio and data-channel text of a stream, published by a browser.

A :class:`WebRTCSource` is a slot that at most one WHIP peer fills at a time: the WHIP
handler (:mod:`streamer.web.whip`) negotiates the peer connection, takes a :class:`Feed`
from the source and hands it the peer's tracks and ``text`` data channel. ``open()``
waits for a peer, so the stream's status topics go online when one arrives; when the
peer leaves (DELETE, DTLS close, ICE failure) ``recv()`` raises
:class:`~streamer.errors.SourceError` once the queued items are consumed, the worker
marks the modalities offline and reopens, which waits for the next publisher.

A feed drains each track's queue at once (aiortc's own are unbounded) into a small
bounded drop-oldest queue of decoded frames; one task per track converts them in order,
off the event loop (:func:`asyncio.to_thread`), to the model's size or rate and stamps
them on the node clock. So a CPU too slow for the peer's frame rate drops the oldest
frames (counted in ``dropped``), never queues without bound nor stalls the loop.
Converted items wait for ``recv()`` in the feed's bounded drop-oldest queue. Tracks the
stream does not take are drained and discarded.

Data-channel messages are text events in the MQTT text topic's format: parsed here,
rejects counted in ``rejected`` by kind, good ones queued with the peer's frames (where
the stream takes text): they reach the stream's windows whether or not its MQTT text
connection is up, which alone sets the text status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

import av

from models.spec import ModelSpec
from streamer.clock import NODE_CLOCK, Clock
from streamer.errors import RejectedInput, SourceEnded, SourceError
from streamer.frames import AudioChunk, Item, Modality, VideoFrame
from streamer.queues import DropQueue
from streamer.snapshots.ring import FrameTap
from streamer.sources.base import DEFAULT_QUEUE
from streamer.sources.clockmap import PtsMapper, StaleFilter
from streamer.sources.convert import AudioConverter, video_to_rgb
from streamer.sources.text import parse_text_event

if TYPE_CHECKING:  # aiortc loads with the HTTP server, which hands over the tracks
    from aiortc.mediastreams import MediaStreamTrack

log = logging.getLogger(__name__)

URL = "webrtc"
DECODED_AHEAD = 2  # decoded frames of one track waiting for conversion; older ones drop

Convert = Callable[[av.VideoFrame | av.AudioFrame], list[Item]]


class Feed:
    """One peer's items on their way to the source: bounded, drop-oldest, counted."""

    def __init__(
        self,
        maxsize: int = DEFAULT_QUEUE,
        *,
        stream: str = "",
        modalities: frozenset[Modality] = frozenset(),
        spec: ModelSpec | None = None,
        clock: Clock = NODE_CLOCK,
        takes_text: bool = False,
        rejected: Counter[str] | None = None,
        snapshot: FrameTap | None = None,
    ) -> None:
        self.stream = stream
        self.snapshot = snapshot  # offered every decoded video frame (the snapshot ring)
        self.modalities = modalities
        self.spec = spec or ModelSpec()
        self.clock = clock
        self.takes_text = takes_text
        self.rejected: Counter[str] = Counter() if rejected is None else rejected
        self._items: DropQueue[Item] = DropQueue(maxsize)
        self._decoded_dropped = 0  # by the tracks' queues of decoded frames
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def dropped(self) -> int:
        return self._items.dropped + self._decoded_dropped

    @property
    def ended(self) -> bool:
        return self._items.ended

    def put(self, item: Item) -> None:
        self._items.put_nowait(item)  # after the end: ignored

    def end(self, reason: str) -> None:
        """No more items; ``get`` raises SourceError(reason) after the queued ones. The
        track tasks stop."""
        self._items.end(SourceError(URL, reason))
        for t in list(self._tasks):
            t.cancel()

    async def get(self) -> Item:
        return await self._items.get()

    def get_nowait(self) -> Item | None:
        return self._items.get_nowait()

    # -- what the peer sends -------------------------------------------------------------
    def add_track(self, track: MediaStreamTrack) -> None:
        """Read ``track`` until it ends (or the feed does): converted if the stream takes
        its kind, else drained and discarded."""
        if self.ended:
            return
        wanted = track.kind in self.modalities
        if track.kind == "video" and wanted:
            pump = self._pump(track, self._video_converter())
        elif track.kind == "audio" and wanted:
            pump = self._pump(track, self._audio_converter())
        else:
            pump = _discard(track)
        name = f"webrtc-{self.stream}-{track.kind}"
        task = asyncio.get_running_loop().create_task(pump, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def add_text(self, message: str | bytes) -> None:
        """One data-channel message: a text event for the stream, or a counted reject."""
        data = message.encode("utf-8", "surrogatepass") if isinstance(message, str) else message
        try:
            ev = parse_text_event(data, stream=self.stream, now_ns=self.clock.now_ns())
        except RejectedInput as e:
            self.rejected[e.kind] += 1
            log.debug("stream %s: rejected a data-channel text event (%s)", self.stream, e)
            return
        if self.takes_text:  # a stream without text takes none
            self.put(ev)

    # -- media ---------------------------------------------------------------------------
    async def _pump(self, track: MediaStreamTrack, convert: Convert) -> None:
        """Drain ``track`` at once; convert its frames in order, in a thread."""
        from aiortc.mediastreams import MediaStreamError

        decoded: DropQueue[av.VideoFrame | av.AudioFrame] = DropQueue(DECODED_AHEAD)

        async def drain() -> None:
            try:
                while True:
                    frame = await track.recv()
                    assert isinstance(frame, av.VideoFrame | av.AudioFrame)
                    if decoded.put_nowait(frame) is not None:
                        self._decoded_dropped += 1
            except MediaStreamError:
                decoded.end(SourceEnded("track ended"))

        async with asyncio.TaskGroup() as tg:
            reader = tg.create_task(drain(), name=f"webrtc-{self.stream}-{track.kind}-recv")
            try:
                while True:
                    frame = await decoded.get()
                    for item in await asyncio.to_thread(convert, frame):
                        self.put(item)
            except SourceEnded:
                return
            finally:
                reader.cancel()

    def _video_converter(self) -> Convert:
        mapper, stale = PtsMapper(self.clock, live=True), StaleFilter()
        size = self.spec.image_size

        def convert(frame: av.VideoFrame | av.AudioFrame) -> list[Item]:
            t = frame.time
            ts = mapper.map(t) if t is not None else self.clock.now_ns()
            if stale.stale("video", ts):
                return []
            assert isinstance(frame, av.VideoFrame)
            if self.snapshot is not None:
                self.snapshot(frame, ts)
            return [VideoFrame(self.stream, ts, video_to_rgb(frame, size))]

        return convert

    def _audio_converter(self) -> Convert:
        mapper, stale = PtsMapper(self.clock, live=True), StaleFilter()
        rate = self.spec.audio_rate
        conv = AudioConverter(rate)

        def convert(frame: av.VideoFrame | av.AudioFrame) -> list[Item]:
            assert isinstance(frame, av.AudioFrame)
            out: list[Item] = []
            for start, samples in conv.convert(frame):
                seconds = len(samples) / rate
                ts = mapper.map(start, seconds) if start is not None else self.clock.now_ns()
                if not stale.stale("audio", ts):
                    out.append(AudioChunk(self.stream, ts, samples, rate))
            return out

        return convert


async def _discard(track: MediaStreamTrack) -> None:
    from aiortc.mediastreams import MediaStreamError

    with contextlib.suppress(MediaStreamError):
        while True:
            await track.recv()


class WebRTCSource:
    """The ``webrtc`` modalities of one stream; fed by whichever WHIP peer holds it."""

    url = URL
    live = True

    def __init__(
        self,
        stream: str,
        modalities: frozenset[Modality],
        *,
        spec: ModelSpec | None = None,
        clock: Clock = NODE_CLOCK,
        takes_text: bool = False,
        snapshot: FrameTap | None = None,
    ) -> None:
        self.stream = stream
        self.modalities = modalities
        self.spec = spec or ModelSpec()
        self.clock = clock
        self.snapshot = snapshot  # each peer's feed offers its video frames to it
        self.takes_text = takes_text  # the data channel's text events go to the windows
        self.rejected: Counter[str] = Counter()  # data-channel text, by kind, every peer
        self._feed: Feed | None = None
        self._attached = asyncio.Event()
        self._dropped_before = 0  # by feeds already gone

    @property
    def dropped(self) -> int:
        return self._dropped_before + (self._feed.dropped if self._feed is not None else 0)

    @property
    def busy(self) -> bool:
        return self._feed is not None and not self._feed.ended

    def feed(self) -> Feed:
        """A new peer's feed (not attached yet): this stream's conversion and text."""
        return Feed(
            stream=self.stream, modalities=self.modalities, spec=self.spec,
            clock=self.clock, takes_text=self.takes_text, rejected=self.rejected,
            snapshot=self.snapshot,
        )  # fmt: skip

    def attach(self, feed: Feed) -> bool:
        """Give the slot to a new peer's feed; False while another peer holds it."""
        if self.busy:
            return False
        self._release()
        self._feed = feed
        self._attached.set()
        return True

    def _release(self) -> None:
        if self._feed is not None:
            self._dropped_before += self._feed.dropped
            self._feed = None
        self._attached.clear()

    async def open(self) -> None:
        """Wait for a publisher (no time limit: a browser may come at any time)."""
        while self._feed is None:
            await self._attached.wait()

    async def recv(self) -> Item:
        feed = self._feed
        if feed is None:
            raise SourceError(URL, "no publisher")
        return await feed.get()

    def recv_nowait(self) -> Item | None:
        return None if self._feed is None else self._feed.get_nowait()

    async def close(self) -> None:
        """Let go of the feed once its peer has left (its session ends it otherwise)."""
        if self._feed is not None and self._feed.ended:
            self._release()


class WebRTCHub:
    """Every ``webrtc`` slot of a node, by stream id."""

    def __init__(self) -> None:
        self.sources: dict[str, WebRTCSource] = {}

    def add(self, src: WebRTCSource) -> WebRTCSource:
        """Make ``src`` the slot WHIP peers of its stream fill."""
        self.sources[src.stream] = src
        return src
