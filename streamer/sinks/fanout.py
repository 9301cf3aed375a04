"""The node's sinks as one: every event goes to each of them, a failing one alone.

A sink whose ``publish`` raises loses that event (counted in :attr:`Fanout.errors`,
logged once per interval); the others still get it and inference never waits for it.
Sinks are entered in order and left in reverse; ``drain`` waits for all of them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Iterable
from typing import Any, Self

from streamer.ratelog import RateLimitedLog
from streamer.sinks.base import Event, Sink

log = logging.getLogger(__name__)


class Fanout:
    def __init__(self, sinks: Iterable[Sink] = ()) -> None:
        self.sinks: list[Sink] = list(sinks)
        self.errors: Counter[str] = Counter()  # events a sink's publish raised on
        self._log = RateLimitedLog(log)
        self._stack = contextlib.AsyncExitStack()

    def publish(self, event: Event) -> None:
        for sink in self.sinks:
            try:
                sink.publish(event)
            except Exception as e:  # noqa: BLE001 - one sink must not cost the others
                self.errors[sink.name] += 1
                self._log.log(
                    logging.ERROR, sink.name, "sink %s: lost a %s: %s: %s",
                    sink.name, type(event).__name__, type(e).__name__, e,
                )  # fmt: skip

    async def drain(self, timeout: float) -> int:  # noqa: ASYNC109 - returns a count
        """Drain every sink at once; the undelivered predictions, summed."""
        left = await asyncio.gather(*(s.drain(timeout) for s in self.sinks))
        return sum(left)

    def counters(self) -> dict[str, dict[str, int]]:
        """Per sink: predictions it dropped and events its publish raised on (stats)."""
        return {s.name: {"dropped": s.dropped, "errors": self.errors[s.name]} for s in self.sinks}

    @property
    def failed(self) -> bool:
        return any(s.failed for s in self.sinks)

    async def __aenter__(self) -> Self:
        async with contextlib.AsyncExitStack() as stack:
            for s in self.sinks:
                await stack.enter_async_context(s)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._stack.__aexit__(*exc)
