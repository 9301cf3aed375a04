"""What keeps hostile HTTP clients from costing the node more than a bounded amount.

* :class:`CappedHandlers`: the listening socket's protocol factory. It hands each new
  connection to an aiohttp request handler up to ``http.max_connections`` live ones, and
  answers any beyond with a 503 and closes it: aiohttp has no connection cap of its own.
* :class:`OncePerKind`: a logging filter for aiohttp's server logger. A malformed request
  (aiohttp answers it 400) becomes one WARNING line with no traceback, and each kind of
  record (exception type, or message) passes at most once per ``interval``; the next one
  that passes says how many were held back. 2,000 bad requests are one line, not 1.5 MB.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from streamer.ratelog import RateGate

LOG_INTERVAL_S = 60.0


class OncePerKind(logging.Filter):
    def __init__(self, interval: float = LOG_INTERVAL_S) -> None:
        super().__init__()
        self.interval = interval
        self._gate = RateGate(interval)  # kinds are exception types or fixed messages

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        kind = type(exc).__name__ if exc is not None else str(record.msg)
        held = self._gate.admit(kind)
        if held is None:
            return False
        more = f"; {held} more like it in the last {self.interval:g} s" if held else ""
        if isinstance(exc, HttpProcessingError):  # the client's fault: no traceback
            if not logging.getLogger(record.name).isEnabledFor(logging.WARNING):
                return False
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            text = " ".join(f"{type(exc).__name__}: {exc.message or exc}".split())[:200]
            record.msg = "HTTP: bad request from %s answered %s (%s)%s"
            record.args = (remote, exc.code, text, more)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        elif more:
            record.msg = f"{record.msg}%s"
            record.args = (*(record.args if isinstance(record.args, tuple) else ()), more)
        return True


def server_logger(name: str) -> logging.Logger:
    """The logger to give aiohttp's request handlers, with :class:`OncePerKind` on it."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, OncePerKind) for f in logger.filters):
        logger.addFilter(OncePerKind())
    return logger


class _Refuse(asyncio.Protocol):
    def __init__(self, limit: int) -> None:
        self.limit = limit

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        body = f"too many connections (http.max_connections is {self.limit})\n".encode()
        head = (
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
        )
        assert isinstance(transport, asyncio.Transport)
        transport.write(head.encode() + body)
        transport.close()


class CappedHandlers:
    """Protocol factory: an aiohttp handler per connection, at most ``limit`` at a time."""

    def __init__(
        self, server: web.Server, limit: int, log: logging.Logger, **handler_args: Any
    ) -> None:
        self.server = server
        self.limit = limit
        self.log = log
        self.handler_args = handler_args
        self.live = 0  # counted from creation, so a burst of accepts cannot overshoot
        self.refused = 0

    def __call__(self) -> asyncio.BaseProtocol:
        if self.live >= self.limit:
            self.refused += 1
            self.log.warning(
                "HTTP: %d connections open, refusing more (http.max_connections)", self.live
            )
            return _Refuse(self.limit)
        self.live += 1
        return _Handler(self, self.server, loop=asyncio.get_running_loop(), **self.handler_args)

    def _gone(self) -> None:
        self.live -= 1


class _Handler(web.RequestHandler):
    def __init__(self, cap: CappedHandlers, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cap: CappedHandlers | None = cap

    def connection_lost(self, exc: BaseException | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            if self._cap is not None:  # once, however often asyncio calls it
                self._cap._gone()
                self._cap = None
