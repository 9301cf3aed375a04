"""Live predictions for browsers: a fan-out to server-sent-event subscribers.

Every subscriber has its own small drop-oldest queue, so a slow browser loses old
predictions (counted) and never holds back the pipeline or other subscribers. The
number of subscribers is capped.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from streamer.queues import DropQueue

MAX_SUBSCRIBERS = 64
QUEUE = 32


class TooManySubscribers(Exception):
    pass


class Subscription:
    def __init__(self, stream: str, maxsize: int) -> None:
        self.stream = stream
        self.queue: DropQueue[bytes] = DropQueue(maxsize)
        self.closed = asyncio.Event()

    async def next(self, timeout: float) -> bytes | None:  # noqa: ASYNC109 - a poll with a deadline
        """The next payload; None after ``timeout`` seconds or once the fan-out closes."""
        if self.closed.is_set():
            return None
        get = asyncio.ensure_future(self.queue.get())
        closed = asyncio.ensure_future(self.closed.wait())
        try:
            done, _ = await asyncio.wait(
                {get, closed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for f in (get, closed):
                f.cancel()
        return get.result() if get in done else None


class LiveEvents:
    def __init__(self, max_subscribers: int = MAX_SUBSCRIBERS, queue: int = QUEUE) -> None:
        self.max_subscribers = max_subscribers
        self.queue = queue
        self._subs: set[Subscription] = set()
        self.dropped = 0  # by subscriptions already gone
        self._closed = False

    def __len__(self) -> int:
        return len(self._subs)

    def publish(self, stream: str, payload: bytes) -> None:
        for sub in self._subs:
            if sub.stream == stream:
                sub.queue.put_nowait(payload)

    @asynccontextmanager
    async def subscribe(self, stream: str) -> AsyncIterator[Subscription]:
        if len(self._subs) >= self.max_subscribers:
            raise TooManySubscribers(f"{self.max_subscribers} subscribers already")
        sub = Subscription(stream, self.queue)
        if self._closed:
            sub.closed.set()
        self._subs.add(sub)
        try:
            yield sub
        finally:
            self._subs.discard(sub)
            self.dropped += sub.queue.dropped

    def close(self) -> None:
        """End every subscription (shutdown): their handlers return."""
        self._closed = True
        for sub in self._subs:
            sub.closed.set()
