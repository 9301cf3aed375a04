"""Run-time control of a node on a real Mosquitto: ``P/N/S/set/enabled`` pauses and
resumes one stream (the others go on), a retained ``OFF`` holds across a start, and
``P/N/S/set/events`` changes one stream's thresholds; bad payloads change nothing and
are counted. Everything is asserted on what a subscriber receives; every wait is on a
message, bounded by a timeout.

The times printed (``-s``) are from the ``set/enabled`` publish to the ``status/video``
``offline`` (OFF) and to the stream's next prediction (ON).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

import aiomqtt
import jsonschema
import pytest
from conftest import Mosquitto, ended
from test_mqtt_discovery import Recorder, recording, retained_now

from streamer.app.node import Node
from streamer.app.node_control import parse_thresholds
from streamer.config import ModelConfig, WindowConfig, parse_config
from streamer.events.settings import EventsConfig, LabelOverride
from streamer.events.tracker import EventTracker
from streamer.inference.model import LoadedModel, load_model
from streamer.predictions import ModelId, Prediction

EVENT_SCHEMA = json.loads(
    resources.files("streamer.contract").joinpath("event.schema.json").read_text()
)


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    return load_model(ModelConfig(threads=1), WindowConfig())


def config(mosquitto: Mosquitto, node: str, **extra: Any) -> dict[str, Any]:
    live = {"video": "synthetic:avdigits?seed=3", "text": []}
    return {
        "node": node, "mqtt": {"url": mosquitto.url, "stats_interval": 60.0},
        "streams": [{"id": "a", **live}, {"id": "b", **live}], **extra,
    }  # fmt: skip


@asynccontextmanager
async def running(cfg: dict[str, Any], loaded: LoadedModel) -> AsyncIterator[Node]:
    node = Node(parse_config(cfg), loaded=loaded)
    task = asyncio.create_task(node.run())
    try:
        yield node
    finally:
        node.stop()
        assert await ended(task, 60) == 0


async def publish(port: int, topic: str, payload: bytes, retain: bool = False) -> float:
    async with aiomqtt.Client("127.0.0.1", port) as c:
        t = time.time()
        await c.publish(topic, payload, qos=1, retain=retain)
    return t


def preds(rec: Recorder, base: str, stream: str) -> list[tuple[float, dict[str, Any]]]:
    topic = f"{base}/{stream}/prediction"
    return [(at, json.loads(p)) for at, (tp, p) in zip(rec.arrived, rec.messages, strict=True)
            if tp == topic]  # fmt: skip


def arrival(rec: Recorder, topic: str, payload: bytes, after: float) -> float:
    return next(at for at, m in zip(rec.arrived, rec.messages, strict=True)
                if m == (topic, payload) and at >= after)  # fmt: skip


async def stays_paused(rec: Recorder, base: str, paused: str, other: str, t_off: float) -> int:
    """While ``paused`` is off, ``other``'s windows keep coming and ``paused``'s do not
    (the flushed ones, cut at the pause, come before ``other``'s next two); its count."""
    n = len(preds(rec, base, other))
    await rec.until_true(lambda r: len(preds(r, base, other)) >= n + 2)
    held = len(preds(rec, base, paused))
    await rec.until_true(lambda r: len(preds(r, base, other)) >= n + 6)
    assert len(preds(rec, base, paused)) == held
    assert all(m["window"]["start"] < t_off + 0.25 for _, m in preds(rec, base, paused))
    return held


async def test_off_pauses_one_stream_and_on_resumes_it_with_seq_going_on(
    mosquitto: Mosquitto, loaded: LoadedModel
) -> None:
    base = "streamer/ctl"
    async with (
        recording(mosquitto.port, [f"{base}/#"]) as rec,
        running(config(mosquitto, "ctl"), loaded) as node,
    ):
        await rec.until_true(lambda r: len(preds(r, base, "a")) >= 2)
        assert rec.payloads(f"{base}/a/enabled") == [b"ON"]  # echoed at start
        t_off = await publish(mosquitto.port, f"{base}/a/set/enabled", b"off")
        await rec.until_all([(f"{base}/a/enabled", b"OFF"), (f"{base}/a/status/video", b"offline")])
        off_ms = (arrival(rec, f"{base}/a/status/video", b"offline", t_off) - t_off) * 1e3
        assert not node.is_enabled("a") and node.snapshot()["streams"]["a"]["enabled"] is False
        na = await stays_paused(rec, base, "a", "b", t_off)
        assert rec.payloads(f"{base}/a/available")[-1] == b"online"  # the stream exists
        assert rec.payloads(f"{base}/b/status/video")[-1] == b"online"
        await publish(mosquitto.port, f"{base}/a/set/enabled", b"MAYBE")  # counted, ignored
        t_on = await publish(mosquitto.port, f"{base}/a/set/enabled", b"ON")
        await rec.until_true(lambda r: len(preds(r, base, "a")) > na)
        on_ms = (preds(rec, base, "a")[na][0] - t_on) * 1e3
        await rec.until(f"{base}/a/status/video", b"online")
        assert rec.payloads(f"{base}/a/enabled")[-1] == b"ON" and node.is_enabled("a")
        assert node.snapshot()["control"] == {"enabled_changes": 2, "enabled_invalid": 1}
    seqs = [m["seq"] for _, m in preds(rec, base, "a")]
    assert seqs == list(range(len(seqs)))  # the pause is not a loss: no gap
    assert len(seqs) > na
    print(f"set/enabled OFF -> status offline {off_ms:.0f} ms; ON -> next prediction "
          f"{on_ms:.0f} ms")  # fmt: skip
    assert (await retained_now(mosquitto.port, [f"{base}/a/enabled"])) == {
        f"{base}/a/enabled": b"ON"
    }


async def test_a_retained_off_keeps_a_stream_paused_from_the_start(
    mosquitto: Mosquitto, loaded: LoadedModel
) -> None:
    base = "streamer/held"
    await publish(mosquitto.port, f"{base}/a/set/enabled", b"OFF", retain=True)
    async with (
        recording(mosquitto.port, [f"{base}/#"]) as rec,
        running(config(mosquitto, "held"), loaded) as node,
    ):
        await rec.until_true(lambda r: len(preds(r, base, "b")) >= 4)
        assert preds(rec, base, "a") == [] and not node.is_enabled("a")
        assert b"online" not in rec.payloads(f"{base}/a/status/video")  # never opened
        assert rec.payloads(f"{base}/a/enabled") == [b"OFF"]
        assert rec.payloads(f"{base}/b/enabled") == [b"ON"]
    await publish(mosquitto.port, f"{base}/a/set/enabled", b"", retain=True)  # cleared


async def test_set_events_changes_one_streams_thresholds_and_bad_ones_are_refused(
    mosquitto: Mosquitto, loaded: LoadedModel
) -> None:
    base = "streamer/thr"
    # no event can open at first: min_windows is out of reach within the test
    events = {"on": 0.3, "off": 0.2, "min_windows": 10_000, "cooldown_s": 1.0}
    async with (
        recording(mosquitto.port, [f"{base}/#"]) as rec,
        running(config(mosquitto, "thr", events=events), loaded) as node,
    ):
        await rec.until_true(lambda r: len(preds(r, base, "a")) >= 2)
        echo = json.loads(rec.payloads(f"{base}/a/thresholds")[-1])
        assert echo == {**events, "overrides": {}}
        for bad in (b"not json", b'{"on": 0.2, "off": 0.9}', b'{"bogus": 1}', b"{}",
                    b'{"label": 7, "on": 0.5}', b'{"min_windows": 0}'):  # fmt: skip
            await publish(mosquitto.port, f"{base}/a/set/events", bad)
        # off 0: an event that opens stays open (never below off) until the pause ends it
        change = b'{"label": "*", "min_windows": 1, "off": 0.0}'
        await publish(mosquitto.port, f"{base}/a/set/events", change)
        await rec.until_true(lambda r: len(r.payloads(f"{base}/a/thresholds")) >= 2)
        assert node.snapshot()["control"] == {"events_refused": 6, "events_changes": 1}
        echo = json.loads(rec.payloads(f"{base}/a/thresholds")[-1])
        assert echo == {**events, "min_windows": 1, "off": 0.0, "overrides": {}}
        await rec.until_true(lambda r: any(m["type"] == "new" for m in _events(r, base)))
        label = next(m["event"]["label"] for m in _events(rec, base) if m["type"] == "new")
        await rec.until(f"{base}/a/event/{label}", b"ON")
        # stream b kept its thresholds: it opened nothing
        assert not any(tp == f"{base}/b/events" for tp, _ in rec.messages)
        # a pause ends the open event: reason "disabled"
        await publish(mosquitto.port, f"{base}/a/set/enabled", b"OFF")
        await rec.until_true(lambda r: any(m["type"] == "end" for m in _events(r, base)))
    got = _events(rec, base)
    for m in got:
        jsonschema.validate(m, EVENT_SCHEMA)
    assert [m["event"]["reason"] for m in got if m["type"] == "end"][0] == "disabled"


def _events(rec: Recorder, base: str) -> list[dict[str, Any]]:
    return [json.loads(p) for tp, p in rec.messages if tp == f"{base}/a/events"]


def _prediction(stream: str, score: float, end: float) -> Prediction:
    scores = {"cat": score, "none": 1.0 - score}
    return Prediction(
        node="n", stream=stream, run="r", seq=0, start_s=end - 2.0, end_s=end, label="cat",
        score=score, scores=tuple(scores.items()), present=(True, False, False),
        frames=8, audio_seconds=0.0, text_events=0, inference_ms=1.0, end_to_publish_ms=1.0,
        model=ModelId("m", "v", ("cat", "none")),
    )  # fmt: skip


def test_thresholds_set_at_run_time_apply_to_one_stream_from_its_next_window() -> None:
    tracker = EventTracker(EventsConfig(on=0.9, off=0.5, min_windows=2), node="n", run="r")
    label, change = parse_thresholds(b'{"label": "cat", "on": 0.6, "min_windows": 1}')
    assert (label, change) == ("cat", LabelOverride(on=0.6, min_windows=1))
    assert parse_thresholds(b'{"label": "*", "off": 0.1}')[0] is None
    tracker.observe(_prediction("x", 0.7, 1.0))  # below 0.9: nothing arms
    tracker.configure("x", label, change)
    assert [m.type for m in tracker.observe(_prediction("x", 0.7, 1.5))] == ["new"]
    assert tracker.observe(_prediction("y", 0.7, 1.5)) == []  # y keeps the config's
    with pytest.raises(ValueError, match="off"):
        tracker.configure("x", "cat", LabelOverride(off=0.8))  # above its on (0.6)
    assert tracker.config_of("x").thresholds("cat").on == 0.6  # unchanged
    ended = tracker.pause("x")
    assert [(m.type, m.event["reason"]) for m in ended] == [("end", "disabled")]
    assert tracker.observe(_prediction("x", 0.95, 2.0)) == []  # paused: not tracked
    tracker.resume("x")
    assert [m.type for m in tracker.observe(_prediction("x", 0.95, 2.5))] == ["new"]


async def test_a_model_loading_does_not_hold_up_set_enabled_and_the_last_request_wins(
    mosquitto: Mosquitto, loaded: LoadedModel
) -> None:
    base = "streamer/slow"
    async with (
        recording(mosquitto.port, [f"{base}/#"]) as rec,
        running(config(mosquitto, "slow"), loaded) as node,
    ):
        await rec.until_true(lambda r: r.payloads(f"{base}/a/enabled") == [b"ON"])
        assert node.control is not None
        started, release = asyncio.Event(), asyncio.Event()
        asked: list[bytes] = []

        async def slow_load(payload: bytes) -> bool:  # a load that takes until released
            asked.append(payload)
            started.set()
            await release.wait()
            return False

        node.control.switch.request = slow_load  # type: ignore[method-assign]
        await publish(mosquitto.port, f"{base}/set/model", b"/first")
        await asyncio.wait_for(started.wait(), 30)
        for later in (b"/second", b"/third"):  # wait behind the load: the last one wins
            await publish(mosquitto.port, f"{base}/set/model", later)
        await publish(mosquitto.port, f"{base}/a/set/enabled", b"OFF")
        await rec.until(f"{base}/a/enabled", b"OFF")  # while the load still runs
        assert asked == [b"/first"] and not node.is_enabled("a")
        release.set()
        await rec.until_true(lambda r: len(asked) == 2)
        assert asked == [b"/first", b"/third"]
        assert node.snapshot()["control"]["model_replaced"] == 1
