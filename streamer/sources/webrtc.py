"""``webrtc``: the video and/or audio of a stream, published by a browser over WHIP.

A :class:`WebRTCSource` is a slot that at most one WHIP peer fills at a time
(:mod:`streamer.web.whip` attaches a :class:`Feed` to it). ``open()`` waits for a peer,
so the stream's status topics go online when one arrives; when the peer leaves (DELETE,
DTLS close, ICE failure) ``recv()`` raises :class:`~streamer.errors.SourceError` once the
queued items are consumed, the worker marks the modalities offline and reopens, which
waits for the next publisher.

Items arrive already converted (model size, model rate) in a bounded drop-oldest queue:
aiortc's own per-track queues are unbounded, so the session drains them promptly into it.
"""

from __future__ import annotations

import asyncio
from collections import deque

from streamer.errors import SourceError
from streamer.frames import Item, Modality
from streamer.sources.base import DEFAULT_QUEUE

URL = "webrtc"


class Feed:
    """One peer's items on their way to the source: bounded, drop-oldest, counted."""

    def __init__(self, maxsize: int = DEFAULT_QUEUE) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.maxsize = maxsize
        self.dropped = 0
        self._items: deque[Item] = deque()
        self._ended: str | None = None
        self._wake = asyncio.Event()

    @property
    def ended(self) -> bool:
        return self._ended is not None

    def put(self, item: Item) -> None:
        if self._ended is not None:
            return
        if len(self._items) >= self.maxsize:
            self._items.popleft()
            self.dropped += 1
        self._items.append(item)
        self._wake.set()

    def end(self, reason: str) -> None:
        """No more items; ``get`` raises SourceError(reason) after the queued ones."""
        if self._ended is None:
            self._ended = reason
        self._wake.set()

    async def get(self) -> Item:
        while True:
            if self._items:
                return self._items.popleft()
            if self._ended is not None:
                raise SourceError(URL, self._ended)
            self._wake.clear()
            await self._wake.wait()


class WebRTCSource:
    """The ``webrtc`` modalities of one stream; fed by whichever WHIP peer holds it."""

    url = URL
    live = True

    def __init__(self, stream: str, modalities: frozenset[Modality]) -> None:
        self.stream = stream
        self.modalities = modalities
        self._feed: Feed | None = None
        self._attached = asyncio.Event()
        self._dropped_before = 0  # by feeds already gone

    @property
    def dropped(self) -> int:
        return self._dropped_before + (self._feed.dropped if self._feed is not None else 0)

    @property
    def busy(self) -> bool:
        return self._feed is not None and not self._feed.ended

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

    async def close(self) -> None:
        """Let go of the feed once its peer has left (its session ends it otherwise)."""
        if self._feed is not None and self._feed.ended:
            self._release()


class WebRTCHub:
    """Every ``webrtc`` slot of a node, by stream id."""

    def __init__(self) -> None:
        self.sources: dict[str, WebRTCSource] = {}

    def source(self, stream: str, modalities: frozenset[Modality]) -> WebRTCSource:
        src = WebRTCSource(stream, modalities)
        self.sources[stream] = src
        return src
