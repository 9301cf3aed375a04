"""An in-process MQTT broker (amqtt) for ``mqtt.url: embedded`` and the demo.

Anonymous clients are allowed and it listens on loopback only by default. It keeps
retained messages in memory while it runs; it is meant for one machine, not a fleet
(use Mosquitto or a cluster there).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any, Self

from streamer.config import MqttConfig
from streamer.errors import BrokerError

log = logging.getLogger(__name__)

DEFAULT_PORT = 1883
SHUTDOWN_S = 3.0


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _quiet_loggers() -> None:
    for name in ("transitions", "amqtt"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:  # respect a level someone chose
            logger.setLevel(logging.WARNING)


class EmbeddedBroker:
    """``async with EmbeddedBroker() as b: ... b.url``.

    ``port=None`` takes 1883 when it is free, otherwise a free port.
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self._requested = port
        self.port = port or 0
        self._broker: Any = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def _config(self, port: int) -> dict[str, Any]:
        return {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }

    async def start(self) -> None:
        from amqtt.broker import Broker

        _quiet_loggers()
        if self._requested is not None:
            candidates = [self._requested]
        elif _port_free(self.host, DEFAULT_PORT):
            candidates = [DEFAULT_PORT, 0]  # 0: a free port, if 1883 was taken meanwhile
        else:
            candidates = [0]
        error: Exception | None = None
        for port in candidates:
            port = port or _free_port(self.host)
            broker = Broker(self._config(port))
            try:
                await broker.start()
            except Exception as e:  # amqtt wraps bind errors in its own BrokerError
                error = e
                continue
            self._broker, self.port = broker, port
            log.info("embedded MQTT broker listening on %s", self.url)
            return
        raise BrokerError(f"embedded broker could not start on {self.host}: {error}")

    async def stop(self) -> None:
        broker, self._broker = self._broker, None
        if broker is None:
            return
        log.debug("embedded MQTT broker on %s stopping", self.url)
        try:
            # amqtt's shutdown waits for every session's in-flight QoS 1 deliveries; under
            # load it can lose track of an acknowledgement and wait for a connected
            # subscriber to leave. Bound it: the process is going away anyway.
            async with asyncio.timeout(SHUTDOWN_S):
                await broker.shutdown()
        except TimeoutError:
            log.warning("embedded MQTT broker did not stop within %.0f s; leaving it", SHUTDOWN_S)
        else:
            log.info("embedded MQTT broker on %s stopped", self.url)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


@contextlib.asynccontextmanager
async def broker_for(cfg: MqttConfig) -> AsyncIterator[MqttConfig]:
    """``cfg`` itself, or, where ``mqtt.url`` is ``embedded``, an embedded broker for the
    block and ``cfg`` pointed at it."""
    if not cfg.embedded:
        yield cfg
        return
    port = None if cfg.url == "embedded" else cfg.port
    async with EmbeddedBroker(port=port) as broker:
        log.info("embedded MQTT broker on %s", broker.url)
        yield cfg.model_copy(update={"url": broker.url})
