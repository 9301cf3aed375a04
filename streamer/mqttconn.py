"""One MQTT connection that comes back: aiomqtt 2.x does not reconnect by itself.

:func:`reconnect_forever` wraps one connection *session* in a loop: connect, run the
session until the connection fails, log one line, back off (:class:`Backoff`, full
jitter), connect again, until cancelled. :class:`Reconnecting` owns that loop as a
resource (a task group, the loop's task, a clean DISCONNECT on exit); the publisher
(:mod:`streamer.sinks.mqtt`) and the text input (:mod:`streamer.sources.mqtt_text`) both
run on it.

Every client here is a :class:`Client`: aiomqtt's, with waits for an ack that let a
cancellation through on Python 3.11.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NoReturn, Self, TypeVar

import aiomqtt

from streamer.backoff import Backoff
from streamer.config import MqttConfig

log = logging.getLogger(__name__)

ACK_TIMEOUT = 10.0  # seconds to wait for one publish's or subscribe's ack before reconnecting
STABLE_S = 1.0  # a connection that lasted this long resets the backoff
PENDING_CALLS = 15  # aiomqtt warns above this many calls awaiting an ack

T = TypeVar("T")


class Client(aiomqtt.Client):
    """aiomqtt's client, whose waits for an ack cannot swallow a cancellation.

    aiomqtt 2.x waits for CONNACK, SUBACK, PUBACK and the end of a DISCONNECT with
    ``asyncio.wait_for``. On Python 3.11 that returns normally when a cancel lands in the
    loop iteration its ack does (python/cpython#86296; 3.12 rewrote ``wait_for``), and the
    cancelled task runs on: a node's control task, cancelled while it echoed a stream's
    state, went back to reading messages, and the node's stop waited for it forever. The
    same wait under ``asyncio.timeout`` lets the cancel through; a timeout is still
    ``MqttError("Operation timed out")``, as aiomqtt raises it.
    """

    # aiomqtt calls it with timeout= (its name, its signature)
    async def _wait_for(self, fut: Awaitable[T], timeout: float | None) -> T:  # noqa: ASYNC109
        if timeout is None:
            timeout = self.timeout
        try:
            async with asyncio.timeout(None if timeout == math.inf else timeout):
                return await fut
        except TimeoutError:
            raise aiomqtt.MqttError("Operation timed out") from None


def make_client(
    cfg: MqttConfig,
    *,
    client_id: str,
    will: aiomqtt.Will | None = None,
    clean_session: bool = True,
    max_incoming: int = 0,
    queue_type: type[asyncio.Queue[aiomqtt.Message]] | None = None,
) -> aiomqtt.Client:
    """An unconnected aiomqtt client for ``cfg``: credentials, TLS, keepalive, Will.

    ``max_incoming`` > 0 bounds the unread incoming messages; ``queue_type`` is the class
    of that queue (one whose ``put_nowait`` never raises counts its own discards, and
    aiomqtt then logs none).

    ``cfg.url`` must name a broker (``embedded`` is resolved by the caller, who starts
    :class:`streamer.sinks.broker.EmbeddedBroker` and passes its URL).
    """
    tls = None
    if cfg.tls:
        tls = aiomqtt.TLSParameters(ca_certs=str(cfg.ca_file) if cfg.ca_file else None)
    client = Client(
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
        # > 0: a flood beyond this many unread messages is discarded
        max_queued_incoming_messages=max_incoming or None,
        queue_type=queue_type,
    )
    client.pending_calls_threshold = PENDING_CALLS  # the publisher keeps its window below it
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
    max_incoming: int = 0,
    queue_type: type[asyncio.Queue[aiomqtt.Message]] | None = None,
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
            client = make_client(
                cfg, client_id=client_id, will=will, clean_session=clean_session,
                max_incoming=max_incoming, queue_type=queue_type,
            )  # fmt: skip
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


class Reconnecting:
    """One connection that comes back, as a resource: ``async with Reconnecting(cfg,
    session, client_id=...)`` runs :func:`reconnect_forever` in a task group of its own;
    :meth:`stop` (and leaving the block) cancels it, which leaves the client's context
    with a clean DISCONNECT, and waits for it. Other tasks that live as long as the
    connection loop join the group with :meth:`create_task`."""

    def __init__(
        self,
        cfg: MqttConfig,
        session: Callable[[aiomqtt.Client], Awaitable[None]],
        *,
        client_id: str,
        what: str,
        will: aiomqtt.Will | None = None,
        max_incoming: int = 0,
        queue_type: type[asyncio.Queue[aiomqtt.Message]] | None = None,
    ) -> None:
        self.cfg = cfg
        self.client_id = client_id
        self.what = what
        self._session = session
        self._will = will
        self._max_incoming = max_incoming
        self._queue_type = queue_type
        self._tg: asyncio.TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None

    def create_task(self, coro: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]:
        assert self._tg is not None, "create_task() outside the async with block"
        return self._tg.create_task(coro, name=name)

    async def __aenter__(self) -> Self:
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        self._runner = self._tg.create_task(
            reconnect_forever(
                self.cfg,
                self._session,
                client_id=self.client_id,
                will=self._will,
                what=self.what,
                max_incoming=self._max_incoming,
                queue_type=self._queue_type,
            ),
            name=f"mqtt-{self.client_id}",
        )
        return self

    async def stop(self) -> None:
        """End the connection loop (idempotent) and wait until it has disconnected."""
        if self._runner is not None and not self._runner.done():
            self._runner.cancel()
            await asyncio.wait([self._runner])

    async def __aexit__(self, *exc: object) -> None:
        assert self._tg is not None
        try:
            await self.stop()
        finally:
            await self._tg.__aexit__(None, None, None)
