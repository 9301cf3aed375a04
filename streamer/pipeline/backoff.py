"""Jittered exponential backoff for reopening live sources."""

from __future__ import annotations

import random


class Backoff:
    """Full jitter: each delay is uniform in [0, min(cap, base * 2**attempt)]."""

    def __init__(self, base: float = 0.2, cap: float = 5.0) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0

    def next(self) -> float:
        delay = random.uniform(0.0, min(self.cap, self.base * 2**self.attempt))
        self.attempt = min(self.attempt + 1, 30)
        return max(delay, self.base / 4)

    def reset(self) -> None:
        self.attempt = 0
