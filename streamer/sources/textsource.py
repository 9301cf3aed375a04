"""``text``: the MQTT text events of one stream, as a :class:`~streamer.sources.base.Source`.

The node's one MQTT text connection (:class:`~streamer.sources.mqtt_text.MqttTextInput`)
routes each topic to its stream's source. Its state is the connection's: ``open()``
returns once the subscriptions are acknowledged (the stream's text goes online); when
the connection is lost, ``recv()`` raises :class:`~streamer.errors.SourceError` once the
events queued before are taken, and the stream marks text offline and opens it again,
which waits for the next connection. (A WebRTC peer's data-channel text comes with its
frames, :mod:`streamer.sources.webrtc`, whether or not this connection is up.)

Events wait in a bounded drop-oldest :class:`~streamer.queues.DropQueue`; each one it
drops is reported to ``on_drop`` (the stats' ``dropped_by.text_queue``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from streamer.errors import SourceError
from streamer.frames import Item, Modality, TextEvent
from streamer.queues import DropQueue

URL = "mqtt-text"


class TextSource:
    url = URL
    live = True
    modalities: frozenset[Modality] = frozenset({"text"})

    def __init__(
        self,
        stream: str,
        *,
        maxsize: int,
        on_drop: Callable[[], None] | None = None,
    ) -> None:
        self.stream = stream
        self.maxsize = maxsize
        self._on_drop = on_drop
        self._queue: DropQueue[TextEvent] = DropQueue(maxsize)  # this or the next connection's
        self._reading: DropQueue[TextEvent] | None = None  # the queue open() took
        self._up = asyncio.Event()
        self._dropped_before = 0  # by the queues of connections already gone

    @property
    def dropped(self) -> int:
        return self._dropped_before + self._queue.dropped

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    # -- the inlets (on the loop) --------------------------------------------------------
    def put(self, event: TextEvent) -> None:
        """One event; when the queue is full its oldest event gives way (``on_drop``)."""
        if self._queue.put_nowait(event) is not None and self._on_drop is not None:
            self._on_drop()

    def up(self) -> None:
        """The connection's subscriptions are acknowledged: ``open()`` may return."""
        self._up.set()

    def down(self, why: str) -> None:
        """The connection is lost: ``recv()`` raises SourceError(why) after what is queued;
        what comes from now on waits for the next connection."""
        if not self._up.is_set():
            return
        self._up.clear()
        ended, self._queue = self._queue, DropQueue(self.maxsize)
        self._dropped_before += ended.dropped
        ended.end(SourceError(self.url, why))

    # -- the Source side -----------------------------------------------------------------
    async def open(self) -> None:
        """Wait for the connection (no time limit: it reconnects on its own)."""
        await self._up.wait()
        self._reading = self._queue

    async def recv(self) -> Item:
        if self._reading is None:
            raise SourceError(self.url, "recv() before open()")
        return await self._reading.get()

    def recv_nowait(self) -> Item | None:
        return None if self._reading is None else self._reading.get_nowait()

    async def close(self) -> None:
        self._reading = None
