"""A bounded hand-off from one producer thread to the event loop.

The producer thread calls :meth:`Handoff.put`; the loop awaits :meth:`Handoff.get`, then
takes what else is already queued with :meth:`Handoff.get_nowait` (no wait, no wake-up).

* live mode (``blocking=False``): a full queue drops the OLDEST item and counts it in
  ``dropped``; ``put`` never blocks, so capture never stalls.
* blocking mode (``blocking=True``, unpaced file replay): ``put`` waits for space, so a
  file read as fast as possible applies backpressure instead of dropping.

The drop-oldest rule is :class:`streamer.queues.DropBuffer`'s, under a lock here. The
loop is woken with ``loop.call_soon_threadsafe`` only when the consumer is actually
waiting, at most one callback per wait. ``put_error``/``put_end`` make ``get`` raise
after the items already queued; :meth:`close` unblocks a waiting producer and consumer.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Generic, Protocol, TypeVar

from streamer.errors import SourceEnded
from streamer.queues import DropBuffer

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)


class ItemSink(Protocol[T_contra]):
    """Where a producer thread hands items: a :class:`Handoff`, or a capture process's
    shared-memory ring (:class:`streamer.capture.child.RingSink`)."""

    def put(self, item: T_contra) -> bool: ...
    def put_error(self, exc: BaseException) -> None: ...
    def put_end(self, message: str = "end of stream") -> None: ...


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Handoff(Generic[T]):
    def __init__(
        self, maxsize: int, *, loop: asyncio.AbstractEventLoop, blocking: bool = False
    ) -> None:
        self._items: DropBuffer[T] = DropBuffer(maxsize)
        self.maxsize = maxsize
        self.blocking = blocking
        self._loop = loop
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    @property
    def dropped(self) -> int:
        return self._items.dropped

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._items)

    # --- producer side (any thread) -------------------------------------------------

    def put(self, item: T) -> bool:
        """Queue ``item``; False if the hand-off is closed or already ended (item discarded)."""
        with self._lock:
            if self.blocking:
                while self._items.full and not self._closed:
                    self._space.wait()
            if self._closed or self._items.end is not None:
                return False
            self._items.push(item)
            self._wake_locked()
            return True

    def put_error(self, exc: BaseException) -> None:
        """``get`` raises ``exc`` once the items queued before it are consumed."""
        with self._lock:
            self._items.finish(exc)
            self._wake_locked()

    def put_end(self, message: str = "end of stream") -> None:
        """``get`` raises SourceEnded once the items queued before it are consumed."""
        self.put_error(SourceEnded(message))

    def _wake_locked(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None  # one callback per wait, never one per item
            try:
                self._loop.call_soon_threadsafe(_wake, waiter)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass

    # --- consumer side (the event loop) ---------------------------------------------

    async def get(self) -> T:
        while True:
            with self._lock:
                if len(self._items):
                    return self._pop_locked()
                if self._items.end is not None:
                    raise self._items.end
                if self._closed:
                    raise SourceEnded("closed")
                fut: asyncio.Future[None] = self._loop.create_future()
                self._waiter = fut
            try:
                await fut
            finally:
                with self._lock:
                    if self._waiter is fut:
                        self._waiter = None

    def get_nowait(self) -> T | None:
        """The next queued item, or None if none is queued (an end or error queued behind
        the items is raised by the next :meth:`get`, never here)."""
        with self._lock:
            return self._pop_locked() if len(self._items) else None

    def _pop_locked(self) -> T:
        item = self._items.pop()
        if self.blocking:
            self._space.notify()  # room for a producer waiting in put()
        return item

    def close(self) -> None:
        """Discard queued items, unblock a waiting producer; ``get`` raises SourceEnded."""
        with self._lock:
            self._closed = True
            self._items.clear()
            self._space.notify_all()
            waiter = self._waiter
            self._waiter = None
        if waiter is not None:
            if self._loop.is_closed():
                return
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is self._loop:
                _wake(waiter)
            else:
                try:
                    self._loop.call_soon_threadsafe(_wake, waiter)
                except RuntimeError:  # the loop closed meanwhile
                    pass
