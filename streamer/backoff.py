"""Exponential backoff with full jitter, for reconnecting to brokers and reopening sources."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable


class Backoff:
    """Exponential backoff with full jitter: the n-th delay is uniform in
    ``[0, min(cap, base * 2**n)]``. :meth:`reset` once a connection has held.
    ``sleep`` waits out a delay (a test's fake clock advances instead)."""

    def __init__(
        self,
        base: float = 0.05,
        cap: float = 5.0,
        rng: Callable[[], float] = random.random,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.base = base
        self.cap = cap
        self._rng = rng
        self._sleep = sleep
        self.attempt = 0

    def reset(self) -> None:
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * 2.0 ** min(self.attempt, 32))
        self.attempt += 1
        return ceiling * self._rng()

    async def sleep(self) -> float:
        delay = self.next_delay()
        await self._sleep(delay)
        return delay
