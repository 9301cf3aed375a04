"""Text events from MQTT topics: one subscriber for the node that reconnects forever.

Each routed topic (``topic -> stream id``) is subscribed with QoS 1. Every message is
parsed by :func:`streamer.sources.text.parse_text_event`; a good one goes to its stream's
:class:`~streamer.sources.textsource.TextSource` (:meth:`MqttTextInput.source`, what the
stream's worker reads), a bad one is counted in ``rejected[stream][kind]`` and logged once
per stream and kind.
Nothing a publisher sends can end the loop. Messages on topics with no route are ignored.
The incoming queue holds at most ``MAX_QUEUED`` unread messages: a flood beyond that
drops the oldest, counted per stream in ``discarded`` (the stats' ``dropped_by.text_queue``,
which also counts what a stream's own queue drops) and logged once per interval.

The connection loop is the publisher's (:class:`streamer.mqttconn.Reconnecting`): on a
lost connection it logs one line, backs off with full jitter and connects again. Every
text source goes up once the subscriptions are acknowledged, and down when that
connection is lost (leaving the ``async with`` block is a loss too).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Self

import aiomqtt

from streamer.clock import Clock
from streamer.config import MqttConfig
from streamer.errors import RejectedInput
from streamer.frames import TextEvent
from streamer.mqttconn import Reconnecting
from streamer.ratelog import RateLimitedLog
from streamer.sources.text import MAX_BYTES, parse_text_event
from streamer.sources.textsource import TextSource

log = logging.getLogger(__name__)

MAX_QUEUED = 10_000  # unread incoming messages; a flood beyond it is discarded, not buffered


def discarding_queue(
    on_discard: Callable[[aiomqtt.Message], None],
) -> type[asyncio.Queue[aiomqtt.Message]]:
    """A queue class for aiomqtt whose ``put_nowait`` on a full queue gives up the oldest
    message (to ``on_discard``) instead of raising, so nothing is lost uncounted."""

    class DiscardingQueue(asyncio.Queue[aiomqtt.Message]):
        def put_nowait(self, item: aiomqtt.Message) -> None:
            if self.full():
                on_discard(self.get_nowait())
            super().put_nowait(item)

    return DiscardingQueue


class MqttTextInput:
    def __init__(
        self,
        cfg: MqttConfig,
        routes: Mapping[str, str],
        *,
        clock: Clock,
        client_id: str,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self.cfg = cfg
        self.routes = dict(routes)
        self.clock = clock
        self.client_id = client_id
        self.max_bytes = max_bytes
        self.rejected: dict[str, Counter[str]] = {s: Counter() for s in self.routes.values()}
        self.received: Counter[str] = Counter()  # accepted events per stream
        self.discarded: Counter[str] = Counter()  # per stream: a flood past MAX_QUEUED
        self._logged: set[tuple[str, str]] = set()
        self._floods = RateLimitedLog(log)
        self._sources = {
            s: TextSource(s, maxsize=MAX_QUEUED, on_drop=self._dropper(s))
            for s in self.routes.values()
        }
        self._conn: Reconnecting | None = None

    def source(self, stream: str) -> TextSource:
        """The text source of ``stream`` (one with routed topics)."""
        return self._sources[stream]

    async def __aenter__(self) -> Self:
        if self.routes:  # nothing to subscribe to: no connection at all
            self._conn = Reconnecting(
                self.cfg,
                self._session,
                client_id=self.client_id,
                what=f"mqtt text input {self.client_id}",
                max_incoming=MAX_QUEUED,
                queue_type=discarding_queue(self._discard),
            )
            await self._conn.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._conn is not None:
            await self._conn.__aexit__(*exc)  # a clean DISCONNECT

    async def _session(self, client: aiomqtt.Client) -> None:
        up = False
        try:
            async with asyncio.TaskGroup() as tg:
                # started first: it is also what notices a lost connection
                tg.create_task(self._receive(client), name="mqtt-text-receive")
                await client.subscribe([(topic, 1) for topic in self.routes])
                up = True
                for src in self._sources.values():
                    src.up()
        finally:
            if up:
                for src in self._sources.values():
                    src.down("the MQTT text connection was lost")

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:  # raises MqttError when disconnected
            self.handle(message.topic.value, message.payload)

    def handle(self, topic: str, payload: object) -> TextEvent | None:
        """Route, parse and deliver one message; returns the event, or None if ignored
        or rejected."""
        stream = self.routes.get(topic)
        if stream is None:
            return None
        if isinstance(payload, bytes | bytearray):
            data = bytes(payload)
        elif payload is None:
            data = b""
        else:
            data = str(payload).encode()
        try:
            event = parse_text_event(
                data, stream=stream, now_ns=self.clock.now_ns(), max_bytes=self.max_bytes
            )
        except RejectedInput as e:
            self._reject(stream, topic, e)
            return None
        self.received[stream] += 1
        self._sources[stream].put(event)
        return event

    def _discard(self, message: aiomqtt.Message) -> None:
        stream = self.routes.get(message.topic.value)
        if stream is None:
            return  # not ours: it would have been ignored anyway
        self._count_discard(stream)

    def _dropper(self, stream: str) -> Callable[[], None]:
        return lambda: self._count_discard(stream)

    def _count_discard(self, stream: str) -> None:
        self.discarded[stream] += 1
        self._floods.log(
            logging.WARNING, stream, "stream %s: more than %d text events queued unread; "
            "the oldest are discarded (counted in dropped_by.text_queue)", stream, MAX_QUEUED,
        )  # fmt: skip

    def _reject(self, stream: str, topic: str, e: RejectedInput) -> None:
        self.rejected.setdefault(stream, Counter())[e.kind] += 1
        if (stream, e.kind) not in self._logged:
            self._logged.add((stream, e.kind))
            log.warning(
                "stream %s: rejected a text event on %s (%s); further %s rejections "
                "are only counted",
                stream,
                topic,
                e,
                e.kind,
            )
