"""The node clock: epoch nanoseconds that never jump, derived from a monotonic clock.

All capture timestamps are on this clock. It is read through the :class:`Clock`
protocol so that time logic can be tested with :class:`streamer.testing.FakeClock`.
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

    def monotonic_of(self, node_ns: int) -> float:
        """The ``time.monotonic()`` value (seconds) at which the clock reads ``node_ns``."""
        return (node_ns - self._epoch0 + self._mono0) / 1e9


NODE_CLOCK = NodeClock()
