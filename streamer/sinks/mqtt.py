"""The MQTT publisher: an outbox drained to the broker over a connection that comes back.

aiomqtt 2.x does not reconnect, so :func:`reconnect_forever` wraps one connection
*session* in a loop: connect, run the session until the connection fails, log one line,
back off (:class:`Backoff`, full jitter), connect again, until cancelled. The text input
(:mod:`streamer.sources.mqtt_text`) runs its subscriber on the same loop.

:class:`MqttPublisher` owns the node's publishing connection::

    connect (Will: P/N/available = "offline", qos 1, retained)
      -> publish P/N/available = "online" (retained)
      -> re-publish the retained state it holds (labels, statuses, discovery configs),
         so that a broker restarted without persistence gets it back
      -> drain the outbox in order, a sliding window of up to ``window`` publishes in
         flight; a message leaves the outbox only once it and every older one are
         acknowledged, so what was in flight when the connection broke goes again after
         reconnecting (duplicates are possible, loss is not)

``enqueue`` never blocks and never fails because the broker is down: when the outbox is
full the oldest message is dropped and counted. A clean exit drains the outbox (up to a
timeout), publishes "stopped" on ``available`` and disconnects cleanly, so the broker
does not send the Will.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import NoReturn, Self

import aiomqtt

from streamer.config import MqttConfig
from streamer.sinks.outbox import Message, Outbox
from streamer.sinks.topics import Topics

log = logging.getLogger(__name__)

ONLINE = b"online"
OFFLINE = b"offline"
STOPPED = b"stopped"

WINDOW = 10  # QoS>=1 publishes in flight at once; aiomqtt warns above 10 pending calls
ACK_TIMEOUT = 10.0  # seconds to wait for one publish's ack before reconnecting
STABLE_S = 1.0  # a connection that lasted this long resets the backoff


class Backoff:
    """Exponential backoff with full jitter: the n-th delay is uniform in
    ``[0, min(cap, base * 2**n)]``. :meth:`reset` once a connection has held."""

    def __init__(
        self, base: float = 0.05, cap: float = 5.0, rng: Callable[[], float] = random.random
    ) -> None:
        self.base = base
        self.cap = cap
        self._rng = rng
        self.attempt = 0

    def reset(self) -> None:
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * 2.0 ** min(self.attempt, 32))
        self.attempt += 1
        return ceiling * self._rng()

    async def sleep(self) -> float:
        delay = self.next_delay()
        await asyncio.sleep(delay)
        return delay


def make_client(
    cfg: MqttConfig,
    *,
    client_id: str,
    will: aiomqtt.Will | None = None,
    clean_session: bool = True,
) -> aiomqtt.Client:
    """An unconnected aiomqtt client for ``cfg``: credentials, TLS, keepalive, Will.

    ``cfg.url`` must name a broker (``embedded`` is resolved by the caller, who starts
    :class:`streamer.sinks.broker.EmbeddedBroker` and passes its URL).
    """
    tls = None
    if cfg.tls:
        tls = aiomqtt.TLSParameters(ca_certs=str(cfg.ca_file) if cfg.ca_file else None)
    client = aiomqtt.Client(
        cfg.host,
        cfg.port,
        username=cfg.username,
        password=cfg.password() if cfg.username is not None else None,
        identifier=client_id,
        will=will,
        clean_session=clean_session,
        keepalive=cfg.keepalive,
        tls_params=tls,
        timeout=ACK_TIMEOUT,
        # small packets in a window must not wait for TCP acks (Nagle + delayed ACK)
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
    )
    client.pending_calls_threshold = WINDOW + 5  # the publisher raises it to its window
    return client


def _consume_disconnect_error(client: aiomqtt.Client) -> None:
    """Mark the client's "disconnected" future's error as seen. aiomqtt 2.x leaves it
    unretrieved when a call (not the message iterator) noticed the loss first, and
    asyncio then logs "Future exception was never retrieved" with a traceback."""
    fut = getattr(client, "_disconnected", None)
    if isinstance(fut, asyncio.Future) and fut.done() and not fut.cancelled():
        fut.exception()


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


async def reconnect_forever(
    cfg: MqttConfig,
    session: Callable[[aiomqtt.Client], Awaitable[None]],
    *,
    client_id: str,
    will: aiomqtt.Will | None = None,
    clean_session: bool = True,
    what: str = "mqtt",
    backoff: Backoff | None = None,
) -> NoReturn:
    """Connect, run ``session(client)`` until the connection fails, back off, repeat.

    ``session`` should run until the connection is lost (raising ``MqttError``); if it
    returns, the client disconnects cleanly and the loop connects again. ``MqttError`` and
    ``OSError`` (also inside exception groups) end a connection; anything else
    propagates, as does cancellation, which is the only way out.

    The backoff is reset once a connection has stayed up for ``STABLE_S``, so a broker
    that accepts and at once drops us (a client-id clash, a broken proxy) still sees the
    delays grow. One outage logs one WARNING line when it starts (later attempts log at
    DEBUG) and one INFO line when a connection is back.
    """
    backoff = backoff or Backoff()
    loop = asyncio.get_running_loop()
    outage_since: float | None = None  # when the current outage began
    said_back = False
    while True:
        error: BaseException | None = None
        connected_at: float | None = None
        client: aiomqtt.Client | None = None
        try:
            client = make_client(cfg, client_id=client_id, will=will, clean_session=clean_session)
            async with client:
                connected_at = loop.time()
                if outage_since is None:
                    log.debug("%s: connected to %s:%d", what, cfg.host, cfg.port)
                elif not said_back:
                    said_back = True
                    log.info(
                        "%s: connected to %s:%d again after %.1fs",
                        what,
                        cfg.host,
                        cfg.port,
                        connected_at - outage_since,
                    )
                await session(client)
        except* (aiomqtt.MqttError, OSError) as group:
            error = _first_leaf(group)
        finally:
            if client is not None:
                _consume_disconnect_error(client)
        now = loop.time()
        if connected_at is not None and now - connected_at >= STABLE_S:
            backoff.reset()
            outage_since, said_back = None, False
        delay = backoff.next_delay()
        if error is not None:
            log.log(
                logging.WARNING if outage_since is None else logging.DEBUG,
                "%s: broker %s:%d unavailable (%s: %s); retrying in %.2fs",
                what,
                cfg.host,
                cfg.port,
                type(error).__name__,
                error,
                delay,
            )
            if outage_since is None:
                outage_since = now
        await asyncio.sleep(delay)


async def until_disconnected(client: aiomqtt.Client) -> NoReturn:
    """Raise ``MqttError`` when ``client``'s connection is lost (it has no subscriptions:
    the message iterator only ends, with that error, on disconnection)."""
    async for _ in client.messages:
        pass
    raise aiomqtt.MqttError("message iterator ended")


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
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.cfg = cfg
        self.topics = topics
        self.client_id = client_id
        self.window = window
        self.close_timeout = close_timeout
        self.published = 0  # outbox messages acknowledged by the broker (QoS 0: written)
        self._outbox = Outbox(cfg.outbox_size)
        self._retained: dict[str, Message] = {}
        self._client: aiomqtt.Client | None = None
        self._up = asyncio.Event()
        self._down = asyncio.Event()
        self._down.set()
        self._wake = asyncio.Event()  # a message was queued or a publish finished
        self._tg: asyncio.TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None
        self._closing = False

    # -- state -----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Connected, with "online" and the retained state acknowledged."""
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

    def set_retained(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        """Publish a retained value and remember it, to re-publish after each reconnect."""
        message = _message(topic, payload, qos, True)
        self._retained[topic] = message
        self._outbox.put(message)
        self._wake.set()

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
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        self._runner = self._tg.create_task(
            reconnect_forever(
                self.cfg,
                self._session,
                client_id=self.client_id,
                will=aiomqtt.Will(self.topics.available, OFFLINE, qos=1, retain=True),
                what=f"mqtt publisher {self.client_id}",
            ),
            name=f"mqtt-publisher-{self.client_id}",
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._tg is not None
        try:
            # on an error or a cancellation, do not wait for the outbox; still say "stopped"
            await self.close(self.close_timeout if exc_type is None else 0.0)
        finally:
            await self._tg.__aexit__(None, None, None)

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
            if self._runner is not None and not self._runner.done():
                self._runner.cancel()  # leaves the client's context: a clean DISCONNECT
                await asyncio.wait([self._runner])
        return len(self._outbox)

    async def _publish_stopped(self, limit: float) -> None:
        client = self._client
        if client is None or not self.connected:
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
                await client.publish(self.topics.available, ONLINE, qos=1, retain=True)
                await self._publish_all(client, list(self._retained.values()))
                self._set_connected(True)
                await self._drain_outbox(client, tg)
        finally:
            self._client = None
            self._set_connected(False)

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
