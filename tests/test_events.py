"""The event tracker (hysteresis on event time), its config and its JSON schema."""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

import jsonschema
import pytest

from models.tags import Tag
from streamer.config import parse_config
from streamer.errors import ConfigError
from streamer.events.event import EventMessage
from streamer.events.settings import EventsConfig
from streamer.events.setup import node_events, supervisor_event_labels
from streamer.events.tracker import EventTracker
from streamer.predictions import ModelId, Prediction
from streamer.sinks.announce import scan_filters, stale_topics
from streamer.sinks.discovery import ha_event_config, ha_image_config
from streamer.sinks.topics import Topics, label_slug

MODEL = ModelId("m", "v1", ("none", "cat", "dog"))
T0 = 1_700_000_000.0


def pred(
    i: int,
    stream: str = "cam",
    tags: tuple[Tag, ...] | None = None,
    present: tuple[bool, bool, bool] = (True, True, False),
    **scores: float,
) -> Prediction:
    end = T0 + i * 0.5
    full = {"none": 0.0, "cat": 0.0, "dog": 0.0, **scores}
    top = max(full, key=lambda k: full[k])
    return Prediction(
        node="n", stream=stream, run="r", seq=i, start_s=end - 2.0, end_s=end, label=top,
        score=full[top], scores=tuple(full.items()), present=present, frames=8,
        audio_seconds=2.0, text_events=0, inference_ms=1.0, end_to_publish_ms=1.0,
        model=MODEL, tags=tags,
    )  # fmt: skip


def run(tracker: EventTracker, cat: list[float], **kw: Any) -> list[EventMessage]:
    out: list[EventMessage] = []
    for i, s in enumerate(cat):
        out += tracker.observe(pred(i, cat=s, **kw))
    return out


def tracker(**cfg: Any) -> EventTracker:
    return EventTracker(EventsConfig(**cfg), node="n", run="r")


def kinds(msgs: list[EventMessage]) -> list[tuple[str, str]]:
    return [(m.type, m.label) for m in msgs]


def test_an_event_opens_after_min_windows_and_ends_after_the_cooldown() -> None:
    tr = tracker(on=0.6, off=0.4, min_windows=2, cooldown_s=1.0, update_interval_s=100)
    msgs = run(tr, [0.1, 0.7, 0.9, 0.8, 0.3, 0.2, 0.1, 0.1])
    assert kinds(msgs) == [("new", "cat"), ("end", "cat")]
    new, end = msgs[0].event, msgs[1].event
    assert new["id"] == end["id"] and new["end"] is None and new["start"] == T0 + 0.5
    assert msgs[0] is not None and msgs[0].stream == "cam"
    # first below off at window 4 (T0+2.0); window 6 (T0+3.0) is cooldown_s later
    assert end["end"] == T0 + 2.0 and end["reason"] == "cooldown"
    assert (end["peak_score"], end["peak_time"]) == (0.9, T0 + 1.0)
    assert end["windows"] == 3
    assert tr.counters() == {"opened": 1, "ended_cooldown": 1, "open": 0}


def test_a_run_shorter_than_min_windows_is_no_event() -> None:
    tr = tracker(min_windows=3)
    assert run(tr, [0.9, 0.9, 0.1, 0.9, 0.9, 0.5, 0.9]) == []
    assert run(tr, [0.9, 0.9, 0.9]) != []


def test_a_score_flapping_within_the_cooldown_gives_one_event() -> None:
    tr = tracker(on=0.6, off=0.4, min_windows=1, cooldown_s=1.0)
    msgs = run(tr, [0.9, 0.2, 0.9, 0.3, 0.5, 0.1, 0.95, 0.2, 0.9] + [0.0] * 4)
    assert [k for k, _ in kinds(msgs)] == ["new", "end"]
    assert msgs[-1].event["peak_score"] == 0.95


def test_between_off_and_on_holds_an_open_event_but_opens_none() -> None:
    tr = tracker(on=0.6, off=0.4, min_windows=1, cooldown_s=0.0)
    assert run(tr, [0.5] * 5) == []
    msgs = run(tr, [0.7, 0.5, 0.5, 0.45, 0.39])
    assert kinds(msgs) == [("new", "cat"), ("end", "cat")]
    assert msgs[1].event["end"] == T0 + 2.0  # cooldown 0: the first window below off


def test_updates_follow_a_rising_peak_at_most_once_per_interval() -> None:
    tr = tracker(on=0.6, off=0.4, min_windows=1, cooldown_s=0.0, update_interval_s=1.0)
    msgs = run(tr, [0.7, 0.75, 0.8, 0.85, 0.9, 0.9, 0.9, 0.0])
    assert [m.type for m in msgs] == ["new", "update", "update", "end"]
    assert [m.event["peak_score"] for m in msgs[1:3]] == [0.8, 0.9]


def test_event_ids_are_unique_and_labels_and_streams_are_separate() -> None:
    tr = tracker(min_windows=1, cooldown_s=0.0)
    out: list[EventMessage] = []
    for rnd in range(3):
        for i, (c, d) in enumerate([(0.9, 0.0), (0.0, 0.9), (0.0, 0.0)]):
            for stream in ("a", "b"):
                out += tr.observe(pred(rnd * 3 + i, stream=stream, cat=c, dog=d))
    news = [m for m in out if m.type == "new"]
    assert len(news) == 12 and len({m.event["id"] for m in news}) == 12
    assert {(m.stream, m.label) for m in news} == {(s, x) for s in "ab" for x in ("cat", "dog")}


def test_labels_lists_exclude_and_overrides() -> None:
    tr = tracker(min_windows=1, cooldown_s=0.0)  # all labels but none
    assert kinds(tr.observe(pred(0, none=0.9))) == []
    tr = tracker(labels=["dog"], min_windows=1, overrides={"dog": {"on": 0.95, "off": 0.9}})
    assert tr.observe(pred(0, cat=0.99, dog=0.94)) == []
    assert kinds(tr.observe(pred(1, dog=0.96))) == [("new", "dog")]
    assert tr.observe(pred(2, dog=0.91)) == []  # at or above its off


def test_a_closed_stream_ends_its_events_and_drops_its_state() -> None:
    tr = tracker(min_windows=1)
    run(tr, [0.9, 0.9], stream="gone")
    (end,) = tr.close_stream("gone", "stream_ended")
    assert end.type == "end" and end.event["reason"] == "stream_ended"
    assert end.event["end"] == T0 + 0.5  # its last window
    assert tr.observe(pred(5, stream="gone", cat=0.9)) == [] and tr.counters()["ignored"] == 1
    run(tr, [0.9], stream="other")
    assert [m.event["reason"] for m in tr.close_all("stopped")] == ["stopped"]
    assert tr.open_events() == []


def test_state_is_bounded_per_stream() -> None:
    tr = tracker(min_windows=5, max_labels=1)
    tr.observe(pred(0, cat=0.9, dog=0.9))
    assert tr.counters()["refused"] == 1


def test_evidence_says_which_modalities_were_present_and_which_tags_named_the_label() -> None:
    tr = tracker(min_windows=1, cooldown_s=0.0)
    cat_v = (Tag("cat", 0.9, "video"),)
    msgs = [
        *tr.observe(pred(0, cat=0.9, tags=cat_v, present=(True, True, False))),
        *tr.observe(pred(1, cat=0.9, tags=(), present=(True, False, False))),
        *tr.observe(pred(2, cat=0.0, tags=())),
    ]
    mods = msgs[-1].event["modalities"]
    assert mods["video"] == {"present": True, "fraction": 1.0, "supported": True}
    assert mods["audio"] == {"present": True, "fraction": 0.5, "supported": False}
    assert mods["text"] == {"present": False, "fraction": 0.0, "supported": False}
    plain = tracker(min_windows=1).observe(pred(0, cat=0.9))[0].event["modalities"]
    assert plain["video"]["supported"] is None  # a model that does not tag: unknown


def test_every_message_matches_the_shipped_schema() -> None:
    schema = json.loads(
        resources.files("streamer.contract").joinpath("event.schema.json").read_text()
    )
    jsonschema.Draft202012Validator.check_schema(schema)
    tr = tracker(min_windows=1, cooldown_s=0.0, update_interval_s=0.0)
    msgs = run(tr, [0.7, 0.9, 0.0, 0.8]) + tr.close_all("stopped")
    assert [m.type for m in msgs] == ["new", "update", "end", "new", "end"]
    for m in msgs:
        jsonschema.validate(json.loads(m.encode()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"type": "begin", "event": msgs[0].event}, schema)


def cfg_error(events: Any) -> str:
    with pytest.raises(ConfigError) as e:
        parse_config({"streams": [{"id": "c", "video": "synthetic:"}], "events": events})
    return str(e.value)


def test_bad_events_config_names_the_field() -> None:
    assert "events.off" in cfg_error({"on": 0.5, "off": 0.6})
    assert "events.on" in cfg_error({"on": 1.5})
    assert "events.min_windows" in cfg_error({"min_windows": 0})
    assert "events.cooldown_s" in cfg_error({"cooldown_s": -1})
    assert "events.labels" in cfg_error({"labels": []})
    assert "events.overrides.dog" in cfg_error({"labels": ["cat"], "overrides": {"dog": {}}})
    assert "events.overrides.cat.off" in cfg_error({"overrides": {"cat": {"off": 0.9}}})
    assert "events.overrides.cat.bogus" in cfg_error({"overrides": {"cat": {"bogus": 1}}})
    ok = parse_config({"streams": [{"id": "c", "video": "synthetic:"}], "events": {}})
    assert ok.events is not None and ok.events.labels == "all"
    assert parse_config({"streams": [{"id": "c", "video": "synthetic:"}]}).events is None


def test_a_listed_label_the_model_cannot_give_is_a_config_error() -> None:
    cfg = parse_config({"streams": [{"id": "c", "video": "synthetic:"}],
                        "events": {"labels": ["cat", "horse"]}})  # fmt: skip
    with pytest.raises(ConfigError) as e:
        node_events(cfg, MODEL, "r")
    assert str(e.value).startswith("events.labels[1]: 'horse' is not a label of m")
    tags = ModelId("p", "v", ("none",), readout="tags")  # tags: an open vocabulary
    tracker, announced = node_events(cfg, tags, "r")
    assert tracker is not None and announced == ["cat", "horse"]
    everything = parse_config({"streams": [{"id": "c", "video": "synthetic:"}], "events": {}})
    assert node_events(everything, MODEL, "r")[1] == ["cat", "dog"]  # all but none
    assert node_events(everything, tags, "r")[1] == []  # nothing to list


def test_labels_become_topic_levels_that_never_collide() -> None:
    assert label_slug("7") == "7" and label_slug("dog-bark_2") == "dog-bark_2"
    odd = [label_slug(x) for x in ("tabby cat", "tabby_cat", "a/b", "a+b", "#", "")]
    assert len(set(odd)) == len(odd)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", s) for s in odd), odd
    assert odd[0].startswith("tabby_cat-") and label_slug(odd[0]) == odd[0]


def test_event_topics_of_removed_streams_and_labels_are_cleared() -> None:
    topics = Topics("streamer", "n")

    def sensor(stream: str, label: str) -> bytes:
        return json.dumps(ha_event_config(topics, "n", stream, label)).encode()

    found = {
        topics.event("cam", "cat"): b"ON",
        topics.event("gone", "cat"): b"ON",
        "streamer/n/gone/enabled": b"OFF",
        "streamer/n/gone/thresholds": b"{}",
        "streamer/n/cam/enabled": b"ON",
        topics.ha_event_discovery("cam", "cat"): sensor("cam", "cat"),
        topics.ha_event_discovery("cam", "dog"): sensor("cam", "dog"),  # no longer a label
        topics.ha_event_discovery("gone", "cat"): sensor("gone", "cat"),
        # another node's, or a payload that is not ours: never touched
        "homeassistant/binary_sensor/n/x_event_y/config": b'{"state_topic": "other/x"}',
    }
    assert stale_topics(topics, ["cam"], found, ["cat"]) == sorted([
        topics.event("gone", "cat"), "streamer/n/gone/enabled", "streamer/n/gone/thresholds",
        topics.ha_event_discovery("cam", "dog"),
        topics.ha_event_discovery("gone", "cat"),
    ])  # fmt: skip
    assert "homeassistant/binary_sensor/n/+/config" in scan_filters(topics)
    assert "streamer/n/+/event/+" in scan_filters(topics)


def test_a_stream_that_no_longer_snaps_loses_its_snapshot_and_image_entity() -> None:
    topics = Topics("streamer", "n")

    def image(stream: str) -> bytes:
        return json.dumps(ha_image_config(topics, "n", stream)).encode()

    found = {
        topics.snapshot("cam"): b"jpeg",
        topics.snapshot("novideo"): b"jpeg",
        topics.snapshot("gone"): b"jpeg",
        topics.ha_image_discovery("cam"): image("cam"),
        topics.ha_image_discovery("novideo"): image("novideo"),
        topics.ha_image_discovery("gone"): image("gone"),
        # another program's image entity under the node's name: never touched
        "homeassistant/image/n/x_snapshot/config": b'{"image_topic": "other/x"}',
    }
    stale = stale_topics(topics, ["cam", "novideo"], found, [], ["cam"])
    assert stale == sorted([
        topics.snapshot("novideo"), topics.snapshot("gone"),
        topics.ha_image_discovery("novideo"), topics.ha_image_discovery("gone"),
    ])  # fmt: skip
    assert {"streamer/n/+/snapshot", "homeassistant/image/n/+/config"} <= set(scan_filters(topics))


def test_the_supervisor_announces_the_checkpoint_s_labels_without_loading_it() -> None:
    def config(**extra: Any) -> Any:
        return parse_config({"streams": [{"id": "c", "video": "synthetic:"}], **extra})

    assert supervisor_event_labels(config()) == []  # no events
    assert supervisor_event_labels(config(events={})) == [str(d) for d in range(10)]
    assert supervisor_event_labels(config(events={"labels": ["3"]})) == ["3"]
    perception = config(events={}, model={"checkpoint": "perception"})
    assert supervisor_event_labels(perception) == []  # tags: nothing to list
