"""The MQTT publisher: an outbox drained to the broker over a connection that comes back.

The connection comes back through :class:`streamer.mqttconn.Reconnecting`.

:class:`MqttPublisher` owns the node's publishing connection::

    connect (Will: P/N/available = "offline", qos 1, retained)
      -> publish P/N/available = "online" (retained)
      -> re-publish the retained state it holds (labels, statuses, discovery configs)
         that the broker has already acknowledged, so that a broker restarted without
         persistence gets it back; a value still in the outbox goes from there, once
      -> drain the outbox in order, a sliding window of up to ``window`` publishes in
         flight; a message leaves the outbox only once it and every older one are
         acknowledged, so what was in flight when the connection broke goes again after
         reconnecting (duplicates are possible, loss is not)

A retained value set with ``coalesce`` (the snapshots, big and of interest only as the
latest) takes the place of its topic's previous value while that one waits in the outbox
unsent, counted in ``coalesced``: the outbox holds at most two per topic (one in flight).

``enqueue`` never blocks and never fails because the broker is down: when the outbox is
full the oldest message is dropped and counted. A clean exit drains the outbox (up to a
timeout), publishes "stopped" on ``available`` and disconnects cleanly, so the broker
does not send the Will.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import NoReturn, Self

import aiomqtt

from streamer.config import MqttConfig
from streamer.mqttconn import Reconnecting, until_disconnected
from streamer.sinks.outbox import Message, Outbox
from streamer.sinks.spool import Journal, Spool, SpoolError, spoolable
from streamer.sinks.topics import Topics

log = logging.getLogger(__name__)

ONLINE = b"online"
OFFLINE = b"offline"
STOPPED = b"stopped"

WINDOW = 10  # QoS>=1 publishes in flight at once; aiomqtt warns above 10 pending calls


class MqttPublisher:
    """Publishes to one broker through a bounded outbox, reconnecting forever.

    Use as ``async with MqttPublisher(cfg, topics, client_id=...) as pub``. The caller
    picks a ``client_id`` unique on the broker (derive it from ``cfg.client_id`` or the
    node). ``enqueue`` and ``set_retained`` are for the event loop's thread.
    """

    def __init__(
        self,
        cfg: MqttConfig,
        topics: Topics,
        *,
        client_id: str,
        window: int = WINDOW,
        close_timeout: float = 5.0,
        spool: Spool | None = None,
        announce: bool = True,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.cfg = cfg
        self.topics = topics
        self.client_id = client_id
        self.window = window
        self.close_timeout = close_timeout
        self.published = 0  # outbox messages acknowledged by the broker (QoS 0: written)
        self.spool = spool  # opened by the caller; loaded on enter, rewritten on close
        # False for one of several worker processes: their supervisor owns "available"
        self.announce = announce
        self.spooled = 0  # messages written to the spool at close
        self.spool_lost = 0  # undelivered predictions the spool failed to keep at close
        self._journal: Journal | None = None
        self._journal_task: asyncio.Task[None] | None = None
        self._outbox = Outbox(cfg.outbox_size)
        self._retained: dict[str, Message] = {}
        self._retained_seq: dict[str, int] = {}  # the outbox sequence number of each
        self._next_send: int | None = None  # the next seq to send; None: not sending
        self.coalesced = 0  # retained values replaced unsent by a newer one (coalesce)
        self._client: aiomqtt.Client | None = None
        self._up = asyncio.Event()
        self._down = asyncio.Event()
        self._down.set()
        self._wake = asyncio.Event()  # a message was queued or a publish finished
        self._conn: Reconnecting | None = None
        self._closing = False

    # -- state -----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Connected, with "online" and the retained state the broker had acknowledged
        re-published (values still in the outbox follow from there, in order)."""
        return self._up.is_set()

    @property
    def depth(self) -> int:
        """Messages in the outbox, in flight or waiting."""
        return len(self._outbox)

    @property
    def dropped(self) -> int:
        """Messages dropped from the full outbox (oldest first)."""
        return self._outbox.dropped

    async def wait_connected(self, connected: bool = True) -> None:
        """Wait until :attr:`connected` equals ``connected``."""
        await (self._up if connected else self._down).wait()

    def _set_connected(self, up: bool) -> None:
        if up:
            self._down.clear()
            self._up.set()
        else:
            self._up.clear()
            self._down.set()

    # -- producer side ---------------------------------------------------------------

    def enqueue(self, topic: str, payload: bytes | str, qos: int, retain: bool = False) -> None:
        """Queue one message; never blocks, never fails because the broker is down.

        Raises ``ValueError`` only for a message no broker would take (bad topic or qos).
        """
        self._outbox.put(_message(topic, payload, qos, retain))
        self._wake.set()

    def set_retained(
        self, topic: str, payload: bytes | str, qos: int = 1, *, coalesce: bool = False
    ) -> None:
        """Publish a retained value and remember it, to re-publish after each reconnect.

        It goes out once through the outbox, in order with everything else; a connection
        re-publishes it only once it has left the outbox (acknowledged, or dropped).
        ``coalesce``: replace the topic's previous value if that is still unsent.
        """
        message = _message(topic, payload, qos, True)
        seq = self._retained_seq.get(topic)
        if coalesce and seq is not None and (self._next_send is None or seq >= self._next_send):
            if self._outbox.replace(seq, message):
                self._retained[topic] = message
                self.coalesced += 1
                return
        self._retained[topic] = message
        self._retained_seq[topic] = self._outbox.end_seq  # the seq put() gives it
        self._outbox.put(message)
        self._wake.set()

    def pending_predictions(self) -> int:
        """Non-retained QoS >= 1 messages (predictions) still in the outbox."""
        return sum(1 for m in self._outbox.peek(len(self._outbox)).messages if spoolable(m))

    async def drain(self, timeout: float) -> int:  # noqa: ASYNC109 - returns a count
        """Wait until the outbox is empty (all acknowledged) or ``timeout`` seconds pass;
        return how many messages are still undelivered."""
        try:
            async with asyncio.timeout(timeout):
                await self._outbox.wait_empty()
        except TimeoutError:
            pass
        return len(self._outbox)

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self.spool is not None:
            old = self.spool.load()
            for m in old:  # ahead of anything this run publishes
                self._outbox.put(m)
            if old:
                log.info("mqtt publisher: %d spooled messages from %s go first", len(old),
                         self.spool.path)  # fmt: skip
        self._conn = Reconnecting(
            self.cfg,
            self._session,
            client_id=self.client_id,
            will=(
                aiomqtt.Will(self.topics.available, OFFLINE, qos=1, retain=True)
                if self.announce else None
            ),
            what=f"mqtt publisher {self.client_id}",
        )  # fmt: skip
        await self._conn.__aenter__()
        if self.spool is not None:  # what the broker has not acked reaches the disk
            self._journal = Journal(self.spool, self._outbox)
            self._journal_task = self._conn.create_task(
                self._journal.run(), name=f"mqtt-journal-{self.client_id}"
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._conn is not None
        try:
            # on an error or a cancellation, do not wait for the outbox; still say "stopped"
            await self.close(self.close_timeout if exc[0] is None else 0.0)
        finally:
            await self._conn.__aexit__(None, None, None)

    async def close(self, timeout: float | None = None) -> int:  # noqa: ASYNC109
        """Drain for up to ``timeout`` s, publish "stopped", disconnect cleanly and stop
        the connection loop. Returns how many messages were left undelivered."""
        if self._closing:
            return len(self._outbox)
        self._closing = True
        loop = asyncio.get_running_loop()
        timeout = self.close_timeout if timeout is None else timeout
        deadline = loop.time() + timeout
        try:
            left = await self.drain(timeout)
            if left:
                log.warning("mqtt publisher: closing with %d messages undelivered", left)
            await self._publish_stopped(max(deadline - loop.time(), 1.0))
        finally:
            if self._conn is not None:
                await self._conn.stop()  # leaves the client's context: a clean DISCONNECT
            await self._save_spool()
        return len(self._outbox)

    async def _save_spool(self) -> None:
        """What is still here, for the next start; a disk that fails is one line with
        the count of what it cost."""
        if self.spool is None:
            return
        if self._journal_task is not None:
            self._journal_task.cancel()
            await asyncio.wait([self._journal_task])
        if self._journal is not None:
            await self._journal.stop()
        pending = self._outbox.peek(len(self._outbox))
        rows = [(pending.seq + i, m) for i, m in enumerate(pending.messages)]
        try:
            self.spooled = self.spool.save(rows)
        except SpoolError as e:
            kept = [n for n, m in rows if spoolable(m) and self._journal is not None
                    and self._journal.on_disk(n)]  # fmt: skip
            undelivered = sum(1 for _, m in rows if spoolable(m))
            self.spool_lost = undelivered - len(kept)
            self.spooled = len(kept)
            log.error(
                "mqtt outbox: could not spool %d undelivered predictions (%s): %d were "
                "journaled before and are kept, %d are lost",
                undelivered, e, len(kept), self.spool_lost,
            )  # fmt: skip

    async def _publish_stopped(self, limit: float) -> None:
        client = self._client
        if client is None or not self.connected or not self.announce:
            return  # not connected: the broker has sent (or will send) the Will
        try:
            await client.publish(self.topics.available, STOPPED, qos=1, retain=True, timeout=limit)
        except aiomqtt.MqttError as e:
            log.warning("mqtt publisher: could not publish 'stopped': %s", e)

    # -- one connection --------------------------------------------------------------

    async def _session(self, client: aiomqtt.Client) -> None:
        self._client = client
        client.pending_calls_threshold = self.window + 5  # aiomqtt warns above it
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(until_disconnected(client), name="mqtt-publisher-watch")
                if self.announce:
                    await client.publish(self.topics.available, ONLINE, qos=1, retain=True)
                await self._publish_all(client, self._acknowledged_retained())
                self._set_connected(True)
                await self._drain_outbox(client, tg)
        finally:
            self._client = None
            self._next_send = None  # what is in the outbox goes again from its head
            self._set_connected(False)

    def _acknowledged_retained(self) -> list[Message]:
        """The retained values no longer in the outbox: those still there go from there
        (the outbox is confirmed in order, so a sequence number below its head has left)."""
        head = self._outbox.head_seq
        return [m for t, m in self._retained.items() if self._retained_seq[t] < head]

    async def _drain_outbox(self, client: aiomqtt.Client, tg: asyncio.TaskGroup) -> NoReturn:
        """A sliding window: up to ``window`` publishes in flight, started in outbox
        order; the outbox is confirmed in order, up to the oldest not yet acknowledged.

        (A window that waits for all its acks before sending more stalls on brokers that
        leave Nagle on: their acks after the first wait for our TCP delayed ACK. Sending
        the next publish as soon as one ack arrives keeps data flowing both ways.)
        A failed publish fails the task group: the session ends and what is unconfirmed
        stays in the outbox for the next connection.
        """
        inflight: deque[tuple[int, asyncio.Task[None]]] = deque()
        next_seq = self._outbox.head_seq
        wake = self._wake

        def on_done(_: asyncio.Task[None]) -> None:
            wake.set()

        while True:
            wake.clear()
            while inflight and inflight[0][1].done():
                seq, task = inflight[0]
                if task.cancelled() or task.exception() is not None:
                    break  # the task group is already ending this session
                inflight.popleft()
                self._outbox.confirm_through(seq)
                self.published += 1
            next_seq = max(next_seq, self._outbox.head_seq)  # skip what overflow dropped
            while len(inflight) < self.window:
                m = self._outbox.get(next_seq)
                if m is None:
                    break
                task = tg.create_task(
                    client.publish(m.topic, m.payload, qos=m.qos, retain=m.retain)
                )
                task.add_done_callback(on_done)
                inflight.append((next_seq, task))
                next_seq += 1
            self._next_send = next_seq
            await wake.wait()

    async def _publish_all(self, client: aiomqtt.Client, messages: list[Message]) -> None:
        """Publish in order, up to ``window`` in flight (a FIFO semaphore keeps the order),
        and return once every one is acknowledged; a failure raises (in a group)."""
        gate = asyncio.Semaphore(self.window)

        async def one(m: Message) -> None:
            async with gate:
                await client.publish(m.topic, m.payload, qos=m.qos, retain=m.retain)

        async with asyncio.TaskGroup() as tg:
            for m in messages:
                tg.create_task(one(m))


def _message(topic: str, payload: bytes | str, qos: int, retain: bool) -> Message:
    if not topic or "+" in topic or "#" in topic or "\0" in topic:
        raise ValueError(f"{topic!r} is not a topic name to publish to")
    if qos not in (0, 1, 2):
        raise ValueError(f"qos must be 0, 1 or 2, got {qos}")
    data = payload.encode() if isinstance(payload, str) else bytes(payload)
    return Message(topic, data, qos, retain)
