"""RateGate / RateLimitedLog: once per kind and interval, the folded count said next."""

from __future__ import annotations

import logging

import pytest

from streamer.ratelog import RateGate, RateLimitedLog


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_kind_passes_once_per_interval_and_then_says_what_it_held_back() -> None:
    clock = Clock()
    gate = RateGate(10.0, clock=clock)
    assert gate.admit("a") == 0 and gate.admit("b") == 0  # kinds are independent
    assert [gate.admit("a") for _ in range(3)] == [None, None, None]
    clock.t += 10.0
    assert gate.admit("a") == 3 and gate.admit("a") is None


def test_the_kinds_it_tracks_are_bounded() -> None:
    gate = RateGate(10.0, max_kinds=2, clock=Clock())
    for k in ("a", "b", "c"):
        assert gate.admit(k) == 0
    assert gate.admit("a") == 0  # forgotten: "a" was the oldest
    assert gate.admit("c") is None


def test_the_log_folds_a_flood_into_one_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    rl = RateLimitedLog(logging.getLogger("t.ratelog"), interval=3600)
    said = [rl.log(logging.WARNING, "k", "stream %s: bad", "s1") for _ in range(1000)]
    assert said.count(True) == 1
    assert [r.getMessage() for r in caplog.records] == ["stream s1: bad"]
