"""Log a repeating event once per kind and interval, with the count of what was not said.

A flood (a broker's discards, a poison input every few ms, malformed HTTP requests) must
not become a flood of log lines: the first event of a kind is let through at once, later
ones within ``interval`` seconds are only counted, and the first one after the interval
says how many were folded into it. Bounded: at most ``max_kinds`` kinds are tracked (the
oldest is forgotten). :class:`RateGate` is the rule; :class:`RateLimitedLog` logs by it.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any


class RateGate:
    def __init__(
        self,
        interval: float = 10.0,
        *,
        max_kinds: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self._max_kinds = max_kinds
        self._clock = clock
        self._kinds: OrderedDict[object, tuple[float, int]] = OrderedDict()  # last, folded

    def admit(self, kind: object) -> int | None:
        """None: ``kind`` passed within the interval (counted, to be folded). Otherwise
        it passes now, and this is how many were held back since it last passed."""
        now = self._clock()
        last = self._kinds.get(kind)
        if last is not None and now - last[0] < self.interval:
            self._kinds[kind] = (last[0], last[1] + 1)
            return None
        self._kinds[kind] = (now, 0)
        self._kinds.move_to_end(kind)
        while len(self._kinds) > self._max_kinds:
            self._kinds.popitem(last=False)
        return last[1] if last is not None else 0


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, *, interval: float = 10.0) -> None:
        self._log = logger
        self._gate = RateGate(interval)

    def log(self, level: int, kind: object, msg: str, *args: Any, exc_info: bool = False) -> bool:
        """Log ``msg % args`` unless ``kind`` was logged within the interval; True if said."""
        folded = self._gate.admit(kind)
        if folded is None:
            return False
        if folded:
            msg += " (%d more like it in the last %.0fs, not logged)"
            args = (*args, folded, self._gate.interval)
        self._log.log(level, msg, *args, exc_info=exc_info)
        return True
