"""models/encoders/registry.py and the checkpoint's architecture: encoders built by name,
old checkpoints as builtin, unknown classes and encoders refused in one line."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_models import SPEC, Stream, make_model
from torch import nn

from models.checkpoint import (
    CheckpointFormatError,
    build_model,
    default_checkpoint_dir,
    load_checkpoint,
    save_checkpoint,
)
from models.encoders import AudioEncoder, TextEncoder, VideoEncoder, registry
from models.encoders.registry import (
    EncoderChoice,
    UnknownEncoderError,
    build_encoder,
    encoder_names,
    register,
)
from models.export import fuse_graph_inputs
from models.fusion import Encoded, FusionModel
from models.spec import ModelSpec
from models.windows import collate
from streamer.cli import main

BUILTIN = {"video": VideoEncoder, "audio": AudioEncoder, "text": TextEncoder}


def test_builtin_encoders_are_found_by_name() -> None:
    for modality, cls in BUILTIN.items():
        assert encoder_names(modality)[0] == "builtin"  # sorted first; pretrained ones follow
        assert type(build_encoder(modality, EncoderChoice("builtin"), SPEC)) is cls
    model = FusionModel(SPEC)
    assert {m: type(model.encoder(m)) for m in BUILTIN} == BUILTIN
    assert model.encoder_choices == {m: EncoderChoice() for m in BUILTIN}


def test_unknown_names_are_clear_errors() -> None:
    with pytest.raises(UnknownEncoderError, match="unknown video encoder 'clip'; known: builtin"):
        build_encoder("video", EncoderChoice("clip"), SPEC)
    with pytest.raises(UnknownEncoderError, match="unknown modality 'depth'"):
        build_encoder("depth", EncoderChoice(), SPEC)
    with pytest.raises(UnknownEncoderError, match="unknown audio encoder 'x'"):
        FusionModel(SPEC, encoders={"audio": "x"})
    with pytest.raises(ValueError, match="takes no options"):
        FusionModel(SPEC, encoders={"text": EncoderChoice("builtin", {"layers": 3})})
    with pytest.raises(ValueError, match="unknown architecture class"):
        build_model(SPEC, architecture="models.fusion.Other")


class _MeanPixel(nn.Module):
    """A stand-in for a new kind of encoder: the mean colour of a frame, projected."""

    def __init__(self, d_model: int, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.proj = nn.Linear(3, d_model)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.proj(frames.float().mean(dim=(1, 2)) * self.scale)
        return out


@pytest.fixture
def mean_pixel() -> Iterator[str]:
    name = "test-mean-pixel"

    def build(spec: ModelSpec, options: Mapping[str, Any]) -> nn.Module:
        return _MeanPixel(spec.d_model, float(options.get("scale", 1.0)))

    register("video", name)(build)
    yield name
    registry._BUILDERS.pop(("video", name))


def test_a_registered_encoder_is_used_saved_and_loaded(mean_pixel: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    choice = EncoderChoice(mean_pixel, {"scale": 0.5})
    model = FusionModel(SPEC, encoders={"video": choice}).eval()
    assert isinstance(model.video_encoder, _MeanPixel) and model.video_encoder.scale == 0.5
    with pytest.raises(ValueError, match="already registered"):
        register("video", mean_pixel)(lambda spec, options: nn.Identity())
    save_checkpoint(model, tmp_path / "ck")
    config = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert config["architecture"]["encoders"] == {
        "video": {"name": mean_pixel, "options": {"scale": 0.5}},
        "audio": {"name": "builtin", "options": {}},
        "text": {"name": "builtin", "options": {}},
    }
    loaded, _ = load_checkpoint(tmp_path / "ck")
    assert loaded.encoder_choices == model.encoder_choices
    batch = collate([Stream("s", np.random.default_rng(0)).window(i) for i in range(3)], SPEC)
    with torch.inference_mode():
        assert torch.equal(loaded(batch), model(batch))


def _edit_config(directory: Path, edit: Any) -> None:
    """Rewrite config.json through ``edit(config)``; the weights (and version) stay."""
    path = directory / "config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))


def test_a_checkpoint_without_encoders_loads_as_builtin(tmp_path: Path) -> None:
    shipped = json.loads((default_checkpoint_dir() / "config.json").read_text())
    assert "encoders" not in shipped["architecture"]  # written before the field existed
    model, _ = load_checkpoint(default_checkpoint_dir())
    assert model.encoder_choices == {m: EncoderChoice() for m in BUILTIN}
    save_checkpoint(make_model(), tmp_path / "ck")
    _edit_config(tmp_path / "ck", lambda c: c["architecture"].pop("encoders"))
    model, _ = load_checkpoint(tmp_path / "ck")
    assert {m: type(model.encoder(m)) for m in BUILTIN} == BUILTIN
    _edit_config(tmp_path / "ck", lambda c: c.pop("architecture"))
    model, _ = load_checkpoint(tmp_path / "ck")
    assert model.encoder_choices == {m: EncoderChoice() for m in BUILTIN}


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda a: a.update({"class": "models.fusion.Other"}), "unknown architecture.class"),
        (lambda a: a.update({"encoders": {"video": {"name": "clip"}}}), "unknown video encoder"),
        (lambda a: a.update({"encoders": {"depth": {"name": "builtin"}}}), "must map video"),
        (lambda a: a.update({"encoders": {"text": "builtin"}}), "encoders.text must be"),
        (lambda a: a.update({"encoders": {"audio": {"name": "builtin", "options": {"x": 1}}}}),
         "takes no options"),
    ],
)  # fmt: skip
def test_unknown_architecture_or_encoder_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: Any, match: str
) -> None:
    ck = tmp_path / "ck"
    save_checkpoint(make_model(), ck)
    _edit_config(ck, lambda c: edit(c["architecture"]))
    with pytest.raises(CheckpointFormatError, match=match) as err:
        load_checkpoint(ck)
    assert "\n" not in str(err.value)
    assert main(["eval", str(ck), str(tmp_path)]) == 2  # the CLI: exit 2, one line
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and err_lines[0].startswith("streamer: error: CHECKPOINT:")
    assert match in err_lines[0]


def test_encoded_field_order_is_the_fuse_graphs_input_order() -> None:
    names = [f.name for f in fields(Encoded)]
    tensors = [torch.zeros(1, i) for i in range(len(names))]
    feed = fuse_graph_inputs(Encoded(*tensors))
    assert list(feed) == [
        "video_emb", "video_mask", "audio_emb", "audio_mask", "text_emb", "text_mask",
        "text_pos_s",
    ]  # fmt: skip
    assert all(f.startswith(n) for f, n in zip(feed, names, strict=True))
    assert all(feed[f] is t for f, t in zip(feed, tensors, strict=True))
