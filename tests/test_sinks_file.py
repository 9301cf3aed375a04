"""The file sink: predictions as JSON lines in a rotating file, bounded in size and count,
with its fsync policy; a disk that fails loses only what it could not write, counted."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from test_composition import SPEC, T0, frames

from streamer.app.node import Node
from streamer.config import ModelConfig, WindowConfig, parse_config
from streamer.errors import ConfigError
from streamer.inference.model import load_model
from streamer.predictions import ModelId, Prediction, PredictionBuilder
from streamer.sinks.base import SinkWriteError
from streamer.sinks.file import FileSink, RotatingFile
from streamer.sinks.settings import FileSinkConfig
from streamer.testing import FakeClock, ListSource

BUILDER_MODEL = ModelId("m", "sha256:x", SPEC.labels)


def predictions(n: int) -> list[Prediction]:
    from test_inference_runner import make_window

    b = PredictionBuilder("n1", "r" * 32, BUILDER_MODEL)
    probs = [0.1] * 10
    return [
        b.build(make_window("a", T0 + i * 500_000_000), probs, inference_ms=1.0, now_ns=T0)
        for i in range(n)
    ]


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_rotation_keeps_at_most_max_files_each_within_max_bytes(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    f = RotatingFile(path, max_bytes=4096, max_files=3, fsync="never")
    ps = predictions(60)
    lines = [p.encode() + b"\n" for p in ps]
    for i in range(0, len(lines), 7):  # in batches, as the sink writes
        f.write(lines[i : i + 7])
    f.close()
    files = sorted(tmp_path.iterdir())
    assert [x.name for x in files] == ["p.jsonl", "p.jsonl.1", "p.jsonl.2"]
    assert all(x.stat().st_size <= 4096 for x in files)
    kept = [*lines_of(path.with_name("p.jsonl.2")), *lines_of(path.with_name("p.jsonl.1")),
            *lines_of(path)]  # fmt: skip
    seqs = [k["seq"] for k in kept]
    assert seqs == list(range(60 - len(seqs), 60))  # the newest, in order; the oldest gone
    assert f.rotations > 2


def test_one_file_only_starts_again(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    f = RotatingFile(path, max_bytes=4096, max_files=1, fsync="never")
    f.write([p.encode() + b"\n" for p in predictions(30)])
    f.close()
    assert [x.name for x in tmp_path.iterdir()] == ["p.jsonl"]
    assert path.stat().st_size <= 4096 and lines_of(path)[-1]["seq"] == 29


@pytest.mark.parametrize(("policy", "expected"), [("batch", 4), ("rotate", 1), ("never", 0)])
def test_the_fsync_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: Any, expected: int
) -> None:
    calls: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    one = len(predictions(1)[0].encode()) + 1
    f = RotatingFile(tmp_path / "p.jsonl", max_bytes=max(4096, one * 5), max_files=2,
                     fsync=policy)  # fmt: skip
    lines = [p.encode() + b"\n" for p in predictions(max(4096 // one, 5) + 2)]
    for chunk in (lines[:1], lines[1:2], lines[2:]):  # the third batch rotates once
        f.write(chunk)
    f._abandon()  # closed without the fsync a close would add
    assert f.rotations == 1
    assert len(calls) == expected  # batch: each of the three and the file it closed


def test_a_full_disk_loses_only_what_it_could_not_write() -> None:
    f = RotatingFile(Path("/dev/full"), max_bytes=1 << 20, max_files=1, fsync="never")
    with pytest.raises(SinkWriteError) as e:
        f.write([b"{}\n"] * 5)
    assert e.value.lost == 5 and "No space left" in str(e.value)


async def test_the_sink_counts_a_failed_write_and_goes_on(tmp_path: Path) -> None:
    sink = FileSink(FileSinkConfig(path=tmp_path / "p.jsonl"))
    good = sink.file
    ps = predictions(6)
    async with sink:
        sink.file = RotatingFile(Path("/dev/full"), max_bytes=1 << 20, max_files=1,
                                 fsync="never")  # fmt: skip
        for p in ps[:3]:
            sink.publish(p)
        assert await sink.drain(5) == 0
        assert sink.dropped == 3
        sink.file = good  # the disk has room again
        for p in ps[3:]:
            sink.publish(p)
        assert await sink.drain(5) == 0
    assert sink.dropped == 3
    assert [x["seq"] for x in lines_of(tmp_path / "p.jsonl")] == [3, 4, 5]


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    base = {"node": "n", "streams": [{"id": "a", "video": "synthetic:avdigits"}]}
    with pytest.raises(ConfigError, match=r"^sinks\.file\.path: no such directory"):
        parse_config({**base, "sinks": {"file": {"path": str(tmp_path / "no" / "p.jsonl")}}})
    with pytest.raises(ConfigError, match=r"^sinks\.file\.max_bytes: "):
        parse_config({**base, "sinks": {"file": {"path": str(tmp_path / "p"), "max_bytes": 1}}})
    with pytest.raises(ConfigError, match=r"^sinks\.file\.fsync: "):
        parse_config({**base, "sinks": {"file": {"path": str(tmp_path / "p"), "fsync": "x"}}})
    with pytest.raises(ConfigError, match=r"^sinks\.kafka: unknown key"):
        parse_config({**base, "sinks": {"kafka": {}}})


async def test_a_node_writes_every_prediction_to_the_configured_file(
    tmp_path: Path, prediction_schema: dict[str, Any]
) -> None:
    path = tmp_path / "out" / "p.jsonl"
    path.parent.mkdir()
    cfg = parse_config({
        "node": "n1",
        "mqtt": {"url": "embedded"},
        "streams": [{"id": "a", "video": "synthetic:avdigits", "text": []}],
        "sinks": {"file": {"path": str(path), "max_bytes": 1 << 20}},
    })  # fmt: skip
    loaded = load_model(ModelConfig(threads=1), WindowConfig())
    node = Node(cfg, clock=FakeClock(), loaded=loaded,
                sources=lambda s: [ListSource(frames(s.id, 0, 4))])  # fmt: skip
    assert await asyncio.wait_for(node.run(), 60) == 0
    got = lines_of(path)
    for p in got:
        jsonschema.validate(p, prediction_schema)
    assert [p["seq"] for p in got] == list(range(node.published)) and node.published == 11
    assert node.snapshot()["sinks"]["file"] == {"dropped": 0, "errors": 0}
