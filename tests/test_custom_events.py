"""Your own events: record labelled clips with ``streamer record``, train on them with
``streamer train`` (the data's labels become the model's), and the checkpoint predicts
those labels."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from streamer.config import parse_config
from streamer.errors import ConfigError
from streamer.record import Recording, record
from streamer.training.commands import spec_for, train_command


def _config(stream: str, freq: int) -> dict[str, object]:
    return {
        "node": "rec", "mqtt": {"url": "embedded"},
        "streams": [{"id": stream, "video": "synthetic:pattern?fps=8",
                     "audio": f"synthetic:tone?freq={freq}", "text": []}],
    }  # fmt: skip


async def test_recorded_events_train_a_model_with_their_labels(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    for label, freq in (("beep", 440), ("hum", 2000)):
        rec = Recording(size=64, fps=4, seconds=3.0, label=label)
        assert await record(parse_config(_config(label, freq)), data / "train", rec) == 0
    shutil.copytree(data / "train", data / "test")
    spec = spec_for(data / "train")
    assert spec.labels == ("beep", "hum") and spec.name == "custom-events"

    out = tmp_path / "ckpt"
    assert await asyncio.to_thread(
        train_command, str(data), str(out), epochs=1, quick=True, device="cpu", seed=0,
        command="test",
    ) == 0  # fmt: skip
    config = json.loads((out / "config.json").read_text())
    assert config["spec"]["labels"] == ["beep", "hum"] and config["trained"] is True
    assert config["metrics"]["train_windows"] > 0


def test_one_label_is_not_a_classifier(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("clip,start,end,label\nc1,0,3,door\n")
    with pytest.raises(ConfigError, match="one label .door.; a classifier needs at least two"):
        spec_for(tmp_path)
    (tmp_path / "labels.csv").write_text("clip,start,end,label\nc1,0,3,3\nc2,0,3,7\n")
    assert spec_for(tmp_path).labels == tuple(str(d) for d in range(10))  # digits: as before
