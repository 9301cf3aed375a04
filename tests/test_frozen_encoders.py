"""Frozen backbones: used, never trained nor saved; a checkpoint records where their
weights come from and loading refuses another backbone in one line."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from models.checkpoint import CheckpointFormatError, load_checkpoint, save_checkpoint
from models.encoders.frozen import FrozenEncoder, Provenance, file_sha256
from models.encoders.registry import register, unregister
from models.fusion import FusionModel
from models.spec import ModelSpec

SPEC = ModelSpec()
NAME = "test-frozen-pixels"
_STATE: dict[str, Any] = {}  # the weight file and version the builder reports


class Pixels(nn.Module):
    """A stand-in backbone: mean colour per quadrant, through a fixed conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.permute(0, 3, 1, 2).float() / 255.0
        return nn.functional.adaptive_avg_pool2d(self.conv(x), 2).flatten(1)  # [N, 16]


def _build(spec: ModelSpec, options: Mapping[str, Any]) -> nn.Module:
    path: Path = _STATE["file"]
    prov = Provenance(
        name=NAME, file=str(path), sha256=file_sha256(path), licence="MIT",
        package="pixels-pkg", version=_STATE["version"],
    )  # fmt: skip
    torch.manual_seed(0)
    return FrozenEncoder(Pixels(), dim=16, d_model=spec.d_model, provenance=prov)


@pytest.fixture
def weights(tmp_path: Path) -> Iterator[Path]:
    """The test encoders, registered for the test alone, and their weight file."""
    path = tmp_path / "pixels.bin"
    path.write_bytes(b"weights v1")
    _STATE.update(file=path, version="1.0")
    register("video", NAME)(_build)
    register("video", TAGGED)(_build_tagged)
    try:
        yield path
    finally:
        unregister("video", NAME)
        unregister("video", TAGGED)
        _STATE.clear()


def test_the_backbone_is_neither_trained_nor_saved(weights: Path) -> None:
    model = FusionModel(SPEC, encoders={"video": NAME})
    enc = model.encoder("video")
    assert isinstance(enc, FrozenEncoder)
    assert not any(k.startswith("video_encoder.conv") for k in model.state_dict())
    assert {k for k in model.state_dict() if k.startswith("video_encoder.")} == {
        "video_encoder.proj.0.weight", "video_encoder.proj.0.bias",
        "video_encoder.proj.1.weight", "video_encoder.proj.1.bias",
    }  # fmt: skip
    backbone = enc.backbone
    assert isinstance(backbone, nn.Module)
    assert all(not p.requires_grad for p in backbone.parameters())
    model.train()
    assert not backbone.training and enc.proj.training
    frames = torch.randint(0, 255, (3, SPEC.image_size, SPEC.image_size, 3), dtype=torch.uint8)
    out = model.encode_video(frames)
    assert out.shape == (3, SPEC.d_model)
    out.sum().backward()
    assert all(p.grad is None for p in backbone.parameters())
    assert enc.proj[1].weight.grad is not None


def test_a_checkpoint_records_the_backbone_and_loading_checks_it(
    weights: Path, tmp_path: Path
) -> None:
    model = FusionModel(SPEC, encoders={"video": NAME})
    info = save_checkpoint(model, tmp_path / "ckpt")
    record = info.config["architecture"]["encoders"]["video"]
    assert record["name"] == NAME and record["weights"]["package"] == "pixels-pkg"
    assert record["weights"]["sha256"] == file_sha256(weights)
    loaded, _ = load_checkpoint(tmp_path / "ckpt")
    frames = torch.randint(0, 255, (2, SPEC.image_size, SPEC.image_size, 3), dtype=torch.uint8)
    model.eval()
    assert torch.equal(loaded.encode_video(frames), model.encode_video(frames))

    _STATE["version"] = "2.0"  # another release of the package is installed
    with pytest.raises(CheckpointFormatError, match=r"trained with pixels-pkg 1\.0 but "
                       r"pixels-pkg 2\.0 is installed") as e:  # fmt: skip
        load_checkpoint(tmp_path / "ckpt")
    assert "\n" not in str(e.value)
    _STATE["version"] = "1.0"
    weights.write_bytes(b"weights v2")  # same version, other bytes
    with pytest.raises(CheckpointFormatError, match="has sha256 .* trained with"):
        load_checkpoint(tmp_path / "ckpt")


TAGGED = "test-frozen-tagged"


class Colour(nn.Module):
    """A stand-in backbone: each frame's mean colour in [0, 1], ``[N, 3]``."""

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return frames.float().mean(dim=(1, 2)) / 255.0


def _build_tagged(spec: ModelSpec, options: Mapping[str, Any]) -> nn.Module:
    def brightness(features: torch.Tensor) -> list[tuple[tuple[str, float], ...]]:
        level = features.mean(dim=1)  # [N], from the backbone's features
        return [(("bright", float(v)), ("dark", 1.0 - float(v))) for v in level]

    path: Path = _STATE["file"]
    prov = Provenance(name=TAGGED, file=str(path), sha256=file_sha256(path), licence="MIT")
    return FrozenEncoder(Colour(), dim=3, d_model=spec.d_model, provenance=prov,
                         tagger=brightness)  # fmt: skip


async def test_a_tagging_encoder_puts_its_tags_in_the_predictions(
    weights: Path, tmp_path: Path, prediction_schema: dict[str, Any]
) -> None:
    import jsonschema
    import numpy as np

    from streamer.app.node import Node
    from streamer.config import ModelConfig, WindowConfig, parse_config
    from streamer.frames import NS, VideoFrame
    from streamer.inference.model import load_model
    from streamer.testing import FakeClock, ListSource, MemorySink

    save_checkpoint(FusionModel(SPEC, encoders={"video": TAGGED}), tmp_path / "tagged")
    loaded = load_model(ModelConfig(checkpoint=tmp_path / "tagged", threads=1), WindowConfig())
    t0 = FakeClock().now_ns()
    white = np.full((SPEC.image_size, SPEC.image_size, 3), 255, np.uint8)
    frames = [VideoFrame("a", t0 + i * NS // SPEC.fps, white) for i in range(2 * SPEC.fps)]
    cfg = parse_config({"node": "n", "mqtt": {"url": "mqtt://127.0.0.1:1"},
                        "streams": [{"id": "a", "video": "synthetic:x", "text": []}]})  # fmt: skip
    sink = MemorySink()
    node = Node(cfg, clock=FakeClock(), loaded=loaded, sinks=[sink],
                sources=lambda s: [ListSource(frames)])  # fmt: skip
    assert await node.run() == 0
    assert sink.predictions
    for p in sink.predictions:
        body = p.to_json()
        jsonschema.validate(body, prediction_schema)
        assert body["tags"] == [{"tag": "bright", "score": 1.0, "modality": "video"}]
