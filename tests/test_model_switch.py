"""A running node switches its model on ``P/N/set/model`` (a real Mosquitto): no window
lost, each stream's predictions change model at one window boundary; a checkpoint that
does not load or takes other inputs is refused and the running model goes on."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import aiomqtt
import pytest
import torch
from conftest import Mosquitto, ended
from test_composition import SPEC, frames

from models.checkpoint import save_checkpoint
from models.fusion import FusionModel
from streamer.app.node import Node
from streamer.config import ModelConfig, WindowConfig, parse_config
from streamer.inference.model import LoadedModel, load_model
from streamer.testing import FakeClock, ListSource, MemorySink


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    return load_model(ModelConfig(threads=1), WindowConfig())


async def _publish(mosquitto: Mosquitto, topic: str, payload: bytes) -> None:
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as c:
        await c.publish(topic, payload, qos=1)


async def test_a_node_switches_model_at_one_window_boundary(
    tmp_path: Path, mosquitto: Mosquitto, loaded: LoadedModel
) -> None:
    torch.manual_seed(1)
    other = save_checkpoint(FusionModel(SPEC), tmp_path / "other", trained=True)
    bad = save_checkpoint(FusionModel(dataclasses.replace(SPEC, image_size=32)), tmp_path / "b")
    held = asyncio.Event()  # the camera pauses while the switch is asked for
    src = ListSource([*frames("a", 0, 3), held, *frames("a", 3, 3)])
    sink = MemorySink()
    cfg = parse_config({
        "node": "sw", "mqtt": {"url": mosquitto.url},
        "streams": [{"id": "a", "video": "synthetic:avdigits", "text": []}],
    })  # fmt: skip
    node = Node(cfg, clock=FakeClock(), loaded=loaded, sinks=[sink], sources=lambda s: [src])
    run = asyncio.create_task(node.run())
    await asyncio.wait_for(sink.wait_for(lambda ev: len(sink.predictions) >= 3), 30)
    assert node.control is not None and node.switch is not None
    await asyncio.wait_for(node.control.subscribed.wait(), 30)
    for payload in (b"relative/path", str(tmp_path / "b").encode()):  # both refused
        node.switch.decided.clear()
        await _publish(mosquitto, "streamer/sw/set/model", payload)
        await asyncio.wait_for(node.switch.decided.wait(), 30)
    assert node.switch.refused == 2 and node.switch.switches == 0
    node.switch.decided.clear()
    await _publish(mosquitto, "streamer/sw/set/model", str(tmp_path / "other").encode())
    await asyncio.wait_for(node.switch.decided.wait(), 60)
    assert node.switch.switches == 1
    held.set()
    assert await ended(run, 60) == 0
    preds = sink.predictions
    assert [p.seq for p in preds] == list(range(len(preds)))  # none lost
    assert len(preds) == 15  # every 2 s window every 0.5 s holding some of the 6 s
    versions = [p.model.version for p in preds]
    k = versions.index(other.version)  # one boundary: the old model before it, the new after
    assert k >= 3 and versions == [loaded.id.version] * k + [other.version] * (len(preds) - k)
    assert bad.version != other.version
    stats = node.snapshot()["model"]
    assert stats == {"name": other.name, "version": other.version, "switches": 1, "refused": 2}
