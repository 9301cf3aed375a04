"""Bounded queues that drop their oldest item when full, and count it.

:class:`DropBuffer` is the one drop-oldest rule: a bounded FIFO whose ``push`` on a full
buffer gives up the oldest item (counted in ``dropped``), with an optional end (an
exception) queued behind the items. It neither waits nor locks; its owners add that:

* :class:`DropQueue`, on the event loop: ``get`` awaits (stages of the pipeline, a
  WebRTC peer's feed, a stream's text, a browser's live events);
* :class:`streamer.sources.handoff.Handoff`, from a capture thread to the loop;
* :class:`streamer.sinks.outbox.Outbox`, which numbers what it holds and removes it
  only once the broker has acknowledged it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class DropBuffer(Generic[T]):
    """FIFO of at most ``maxsize`` items; not thread-safe, no waiting."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self.dropped = 0
        self.end: BaseException | None = None  # for the consumer, once the items are gone
        self._items: deque[T] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[T]:
        """The queued items, oldest first (a snapshot)."""
        return iter(list(self._items))

    def __getitem__(self, i: int) -> T:
        return self._items[i]

    def __setitem__(self, i: int, item: T) -> None:
        self._items[i] = item

    @property
    def full(self) -> bool:
        return len(self._items) >= self.maxsize

    def push(self, item: T) -> T | None:
        """Append; returns the oldest item if it had to be dropped to make room."""
        dropped = None
        if len(self._items) >= self.maxsize:
            dropped = self._items.popleft()
            self.dropped += 1
        self._items.append(item)
        return dropped

    def pop(self) -> T:
        """Remove and return the oldest item (IndexError when empty)."""
        return self._items.popleft()

    def finish(self, end: BaseException) -> None:
        """Queue ``end`` behind the items (the first end given stays)."""
        if self.end is None:
            self.end = end

    def clear(self) -> None:
        self._items.clear()


class DropQueue(Generic[T]):
    """An asyncio FIFO with ``maxsize``. ``put_nowait`` never blocks: a full queue loses
    its oldest item (``dropped`` counts them). ``put`` waits for room instead
    (backpressure). After :meth:`end`, puts are ignored and ``get`` raises the end once
    the items already queued are taken. Use it from the event loop's thread."""

    def __init__(self, maxsize: int) -> None:
        self._buf: DropBuffer[T] = DropBuffer(maxsize)
        self.maxsize = maxsize
        self._not_empty = asyncio.Event()
        self._not_full = asyncio.Event()
        self._not_full.set()

    @property
    def dropped(self) -> int:
        return self._buf.dropped

    @property
    def ended(self) -> bool:
        return self._buf.end is not None

    def __len__(self) -> int:
        return len(self._buf)

    def __iter__(self) -> Iterator[T]:
        """The queued items, oldest first (a snapshot)."""
        return iter(self._buf)

    def put_nowait(self, item: T) -> T | None:
        """Append; returns the oldest item if it had to be dropped to make room (after
        the end: nothing is queued, and None)."""
        if self.ended:
            return None
        dropped = self._buf.push(item)
        self._changed()
        return dropped

    async def put(self, item: T) -> None:
        while self._buf.full and not self.ended:
            await self._not_full.wait()
        self.put_nowait(item)

    def get_nowait(self) -> T | None:
        """The oldest item, or None when none is queued (an end queued behind the items
        is raised by the next :meth:`get`, never here)."""
        if not len(self._buf):
            return None
        item = self._buf.pop()
        self._changed()
        return item

    async def get(self) -> T:
        while not len(self._buf):
            if self._buf.end is not None:
                raise self._buf.end
            await self._not_empty.wait()
        item = self._buf.pop()
        self._changed()
        return item

    def end(self, end: BaseException) -> None:
        """No more items: ``get`` raises ``end`` once the queued ones are taken."""
        self._buf.finish(end)
        self._not_empty.set()  # a waiting get() sees the end
        self._not_full.set()  # a waiting put() gives up

    def clear(self) -> None:
        self._buf.clear()
        self._changed()

    def _changed(self) -> None:
        if len(self._buf) or self.ended:
            self._not_empty.set()
        else:
            self._not_empty.clear()
        if not self._buf.full or self.ended:
            self._not_full.set()
        else:
            self._not_full.clear()


async def fill_batch(
    batch: list[T],
    limit: int,
    wait_s: float,
    get: Callable[[], Awaitable[T]],
    get_nowait: Callable[[], T | None],
    weight: Callable[[T], int] = lambda _: 1,
) -> None:
    """Add to ``batch`` (its first item in hand) what is queued and what arrives within
    ``wait_s`` of now, until it weighs ``limit`` (the inference runner's windows, a runner
    actor's calls)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    n = sum(weight(x) for x in batch)
    while n < limit:
        more = get_nowait()
        if more is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:  # asyncio.timeout, never wait_for (StreamPipeline._tick)
                async with asyncio.timeout(remaining):
                    more = await get()
            except TimeoutError:
                return
        batch.append(more)
        n += weight(more)
