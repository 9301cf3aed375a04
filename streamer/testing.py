"""Fakes for tests of pure logic: a settable clock, a list-backed source."""

from __future__ import annotations

from collections.abc import Iterable

from streamer.clock import SetClock
from streamer.errors import SourceEnded
from streamer.frames import Item


class FakeClock(SetClock):
    """A settable clock for tests, starting at a whole number of seconds."""

    def __init__(self, start_ns: int = 1_764_160_000 * 1_000_000_000) -> None:
        super().__init__(start_ns)


class ListSource:
    """A source that returns the given items, then raises SourceEnded."""

    def __init__(self, items: Iterable[Item]) -> None:
        self._items = list(items)
        self._i = 0

    async def recv(self) -> Item:
        if self._i >= len(self._items):
            raise SourceEnded("list exhausted")
        item = self._items[self._i]
        self._i += 1
        return item

    async def close(self) -> None:
        self._i = len(self._items)
