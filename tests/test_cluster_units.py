"""--engine ray without a cluster: the shard plan, the config it refuses (exit 2, naming
the field), the gap markers a subscriber gets, the shard's config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from streamer.cli import main
from streamer.cluster.gaps import GAP_SCHEMA, GapTracker
from streamer.cluster.plan import ShardPlan, plan_shards
from streamer.cluster.shard import shard_config
from streamer.config import parse_config
from streamer.contract import gap_schema


def _cfg(streams: list[dict[str, Any]], **extra: Any) -> Any:
    return parse_config({"streams": streams, **extra})


def test_shards_pack_streams_per_host_in_config_order() -> None:
    streams = [{"id": f"s{i}", "video": "synthetic:pattern"} for i in range(5)]
    streams.insert(2, {"id": "cam", "video": "v4l2:///dev/video0", "host": "kitchen"})
    streams.append({"id": "mic1", "audio": "mic:default", "host": "kitchen"})
    streams.append({"id": "far", "video": "synthetic:pattern", "host": "attic"})
    plans = plan_shards(_cfg(streams, ray={"streams_per_shard": 2}))
    assert plans == [
        ShardPlan(0, ("s0", "s1"), None),
        ShardPlan(1, ("s2", "s3"), None),
        ShardPlan(2, ("s4",), None),
        ShardPlan(3, ("cam", "mic1"), "kitchen"),
        ShardPlan(4, ("far",), "attic"),
    ]
    assert sorted(s for p in plans for s in p.streams) == sorted(s["id"] for s in streams)


def test_a_shard_gets_its_streams_and_directories_of_its_own(tmp_path: Path) -> None:
    cfg = _cfg([{"id": "a", "video": "synthetic:pattern"}, {"id": "b", "video": "synthetic:"}],
               mqtt={"outbox_dir": str(tmp_path / "spool")},
               http={"listen": "127.0.0.1:0"})  # fmt: skip
    sub = shard_config(cfg, ShardPlan(3, ("b",), None))
    assert [s.id for s in sub.streams] == ["b"]
    assert sub.mqtt.outbox_dir == tmp_path / "spool" / "shard3"
    assert sub.http is None and sub.node == cfg.node


@pytest.mark.parametrize(
    ("streams", "extra", "field"),
    [
        ([{"id": "c", "video": "v4l2:///dev/video0"}], {}, "streams[0].host"),
        ([{"id": "s", "video": "synthetic:"}, {"id": "m", "audio": "mic:default"}], {},
         "streams[1].host"),
        ([{"id": "w", "video": "webrtc"}], {"http": {"listen": "127.0.0.1:0"}}, "streams[0]"),
        ([{"id": "s", "video": "synthetic:"}], {"mqtt": {"url": "embedded://127.0.0.1:1883"}},
         "mqtt.url"),
        ([{"id": "s", "video": "synthetic:", "host": "no spaces"}], {}, "streams[0].host"),
        ([{"id": "s", "video": "synthetic:"}], {"ray": {"streams_per_shard": 0}},
         "ray.streams_per_shard"),
        ([{"id": "s", "video": "synthetic:"}], {"ray": {"runner_host": "a/b"}}, "ray.runner_host"),
    ],
)  # fmt: skip
def test_what_the_ray_engine_refuses_exits_2_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], streams: list[dict[str, Any]],
    extra: dict[str, Any], field: str,
) -> None:  # fmt: skip
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(json.dumps({"streams": streams, **extra}))
    assert main(["run", str(cfg), "--engine", "ray"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"streamer: error: {field}:"), err
    assert "\n" not in err


def test_address_without_the_ray_engine_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(json.dumps({"streams": [{"id": "s", "video": "synthetic:"}]}))
    assert main(["run", str(cfg), "--address", "127.0.0.1:6379"]) == 2
    assert capsys.readouterr().err.startswith("streamer: error: --address:")


def _prediction(stream: str, run: str, seq: int, start: float) -> bytes:
    return json.dumps({"stream": stream, "run": run, "seq": seq,
                       "window": {"start": start, "end": start + 2.0}}).encode()  # fmt: skip


def test_a_stream_back_under_a_new_run_gets_one_marker_that_joins_the_runs() -> None:
    import jsonschema

    g = GapTracker("site", 0.5)
    assert g.observe(_prediction("cam", "A", 0, 100.0)) is None
    assert g.observe(_prediction("cam", "A", 1, 100.5)) is None
    assert g.observe(_prediction("other", "X", 0, 100.0)) is None
    m = g.observe(_prediction("cam", "B", 0, 104.0))
    assert m is not None
    jsonschema.validate(m, gap_schema())
    assert m["schema"] == GAP_SCHEMA
    assert (m["stream"], m["run"], m["seq"]) == ("cam", "B", 0)
    assert m["prev"] == {"run": "A", "seq": 1, "window_start": 100.5}
    assert (m["from"], m["to"], m["windows"]) == (101.0, 104.0, 6)  # 101.0 ... 103.5
    assert g.observe(_prediction("cam", "B", 1, 104.5)) is None
    # the dead run's message delivered late counts in the marker already: no second one
    assert g.observe(_prediction("cam", "A", 2, 101.0)) is None
    # back at once: a marker with no window in it still joins the runs
    m2 = g.observe(_prediction("cam", "C", 0, 105.0))
    assert m2 is not None and m2["windows"] == 0 and m2["prev"]["run"] == "B"
    assert g.gap_windows == {"cam": 6} and g.markers == 2


def test_a_malformed_prediction_is_counted_not_fatal() -> None:
    g = GapTracker("site", 0.5)
    for bad in (b"not json", b"{}", b'{"stream": "s", "run": "r", "seq": "x", "window": {}}'):
        assert g.observe(bad) is None
    assert g.malformed == 3
