"""The node clock: epoch nanoseconds that never jump, derived from a monotonic clock.

All capture timestamps are on this clock. It is read through the :class:`Clock`
protocol so that time logic can be tested with :class:`streamer.testing.FakeClock`, and
so that an offline replay (training's clip set) can run on a :class:`SetClock`.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_ns(self) -> int: ...


class NodeClock:
    """Epoch time at construction, advanced by ``time.monotonic_ns`` from then on."""

    def __init__(self) -> None:
        self._epoch0 = time.time_ns()
        self._mono0 = time.monotonic_ns()

    def now_ns(self) -> int:
        return self._epoch0 + (time.monotonic_ns() - self._mono0)

    @property
    def offset_ns(self) -> int:
        """Epoch ns minus CLOCK_MONOTONIC ns: the same for every process of the machine
        (the monotonic clock is system-wide), so a capture process stamps on this clock."""
        return self._epoch0 - self._mono0


class OffsetClock:
    """A :class:`NodeClock` rebuilt in another process from its ``offset_ns``."""

    def __init__(self, offset_ns: int) -> None:
        self.offset_ns = offset_ns

    def now_ns(self) -> int:
        return self.offset_ns + time.monotonic_ns()


class SetClock:
    """A clock that reads what it was set to: time for offline replays, which must not
    depend on when they run."""

    def __init__(self, start_ns: int) -> None:
        self.t = start_ns

    def now_ns(self) -> int:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += round(seconds * 1e9)

    def set(self, t_ns: int) -> None:
        self.t = t_ns


NODE_CLOCK = NodeClock()
