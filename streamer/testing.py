"""Fakes for tests of pure logic: a settable clock."""

from __future__ import annotations

from streamer.clock import SetClock


class FakeClock(SetClock):
    """A settable clock for tests, starting at a whole number of seconds."""

    def __init__(self, start_ns: int = 1_764_160_000 * 1_000_000_000) -> None:
        super().__init__(start_ns)
