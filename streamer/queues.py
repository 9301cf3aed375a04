"""A bounded asyncio queue that drops its oldest item when full, and counts it."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class DropQueue(Generic[T]):
    """FIFO with ``maxsize``. ``put_nowait`` never blocks: a full queue loses its oldest
    item (``dropped`` counts them). ``put`` waits for room instead (backpressure)."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.maxsize = maxsize
        self._items: deque[T] = deque()
        self._not_empty = asyncio.Event()
        self._not_full = asyncio.Event()
        self._not_full.set()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[T]:
        """The queued items, oldest first (a snapshot)."""
        return iter(list(self._items))

    def put_nowait(self, item: T) -> T | None:
        """Append; returns the oldest item if it had to be dropped to make room."""
        dropped = None
        if len(self._items) >= self.maxsize:
            dropped = self._items.popleft()
            self.dropped += 1
        self._items.append(item)
        self._changed()
        return dropped

    async def put(self, item: T) -> None:
        while len(self._items) >= self.maxsize:
            await self._not_full.wait()
        self._items.append(item)
        self._changed()

    def get_nowait(self) -> T:
        item = self._items.popleft()
        self._changed()
        return item

    async def get(self) -> T:
        while not self._items:
            await self._not_empty.wait()
        return self.get_nowait()

    def clear(self) -> None:
        self._items.clear()
        self._changed()

    def _changed(self) -> None:
        if self._items:
            self._not_empty.set()
        else:
            self._not_empty.clear()
        if len(self._items) < self.maxsize:
            self._not_full.set()
        else:
            self._not_full.clear()
