"""Fakes for tests: a settable clock, a scripted source, sinks that keep, fail or stall.

Nothing in the runtime imports this module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence

from streamer.clock import SetClock
from streamer.errors import SourceEnded, SourceError, SourceOpenError
from streamer.frames import Item, Modality
from streamer.predictions import Prediction
from streamer.sinks.base import BufferedSink, Event, LocalSink


class FakeClock(SetClock):
    """A settable clock for tests, starting at a whole number of seconds."""

    def __init__(self, start_ns: int = 1_764_160_000 * 1_000_000_000) -> None:
        super().__init__(start_ns)


Step = Item | BaseException | asyncio.Event
Session = Sequence[Step] | SourceOpenError


class ListSource:
    """A source that plays scripted sessions, one per ``open()``.

    A session is a list of items, in which an exception stands where ``recv()`` raises
    it (a :class:`~streamer.errors.SourceError`: the source failed and a live one is
    reopened) and an :class:`asyncio.Event` where ``recv()`` waits until it is set (a
    camera that is silent), or a :class:`~streamer.errors.SourceOpenError` that
    ``open()`` raises.
    After the last session's items, ``recv()`` raises SourceEnded. ``opens`` counts the
    calls to ``open()``; ``closed`` is set by ``close()``.
    """

    def __init__(
        self,
        *sessions: Session,
        modalities: Iterable[Modality] = ("video",),
        live: bool = False,
        url: str = "list:",
    ) -> None:
        self.url = url
        self.modalities = frozenset(modalities)
        self.live = live
        self.opens = 0
        self.closed = asyncio.Event()
        self._sessions = list(sessions)
        self._items: list[Step] = []

    @property
    def dropped(self) -> int:
        return 0

    async def open(self) -> None:
        self.opens += 1
        self.closed.clear()
        if not self._sessions:
            self._items = []
            return
        session = self._sessions.pop(0)
        if isinstance(session, SourceOpenError):
            raise session
        self._items = list(session)

    async def recv(self) -> Item:
        while self._items and isinstance(silence := self._items[0], asyncio.Event):
            await silence.wait()
            self._items.pop(0)
        if not self._items:
            raise SourceEnded("list exhausted")
        item = self._items.pop(0)
        if isinstance(item, BaseException):
            raise item
        assert not isinstance(item, asyncio.Event)
        return item

    def recv_nowait(self) -> Item | None:
        item = self._items[0] if self._items else None
        if item is None or isinstance(item, BaseException | asyncio.Event):
            return None
        self._items.pop(0)
        return item

    async def close(self) -> None:
        self._items = []
        self.closed.set()


def failing_session(*items: Item, why: str = "connection lost") -> list[Step]:
    """Items, then the failure of a live source."""
    return [*items, SourceError("list:", why)]


class MemorySink(LocalSink):
    """Keeps every event; ``fail`` makes ``publish`` raise (a broken sink)."""

    name = "memory"

    def __init__(self, name: str = "memory", *, fail: bool = False) -> None:
        self.name = name
        self.fail = fail
        self.events: list[Event] = []
        self._changed = asyncio.Event()

    def publish(self, event: Event) -> None:
        if self.fail:
            raise RuntimeError(f"sink {self.name} is broken")
        self.events.append(event)
        self._changed.set()

    async def wait_for(self, predicate: Callable[[list[Event]], bool]) -> None:
        """Until ``predicate(events)`` holds."""
        while not predicate(self.events):
            self._changed.clear()
            await self._changed.wait()

    @property
    def predictions(self) -> list[Prediction]:
        return [e for e in self.events if isinstance(e, Prediction)]


class GatedSink(BufferedSink):
    """A slow sink: each write waits until :attr:`gate` is set (a stalled disk or
    server); what it wrote is in ``written``."""

    name = "gated"

    def __init__(self, *, buffer: int = 4) -> None:
        super().__init__(buffer=buffer, batch=1)
        self.gate = asyncio.Event()
        self.written: list[Prediction] = []

    async def write(self, batch: list[Prediction]) -> None:
        await self.gate.wait()
        self.written.extend(batch)
