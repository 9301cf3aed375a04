"""Training on frozen encoders: each backbone runs once per unique item, its features are
cached in DATA/.cache (keyed by the windows and the encoder), and the features path gives
the backbone path's logits."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_pretrained_encoders import require_packages

from models.encoders import registry
from models.encoders.frozen import FrozenEncoder, Provenance
from models.encoders.registry import EncoderChoice, register
from models.fusion import FusionModel
from models.spec import ModelSpec
from models.training import TrainConfig, evaluate, fit
from models.windows import collate
from streamer.cli import main
from streamer.config import WindowConfig
from streamer.datasets.avdigits import generate
from streamer.training.clipset import WindowSet, load_split
from streamer.training.embedding import (
    EmbeddedWindows,
    cache_path,
    cached_features,
    embed_items,
)

SPEC = ModelSpec()
COUNTED = {"video": 0, "text": 0}  # items each test backbone has seen


class _Pixels(torch.nn.Module):
    """A stand-in backbone: mean and spread of each colour of a frame, times a weight."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.full((6,), scale))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        COUNTED["video"] += len(frames)
        x = frames.float() / 255.0
        return torch.cat([x.mean(dim=(1, 2)), x.std(dim=(1, 2))], dim=1) * self.w


def _bytes(ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    COUNTED["text"] += len(ids)
    mean = ids.float().sum(dim=1) / lengths.clamp(min=1).float() / 256.0
    return torch.stack([mean, lengths.float() / 64.0, torch.ones_like(mean)], dim=1)


def _provenance(name: str, options: Mapping[str, Any]) -> Provenance:
    return Provenance(name=name, file="test", sha256=str(options.get("sha", "0" * 64)),
                      licence="MIT", package="test", version="1")  # fmt: skip


@pytest.fixture
def counting() -> Iterator[dict[str, str]]:
    """A frozen video and text encoder that count the items their backbones embed."""

    def video(spec: ModelSpec, options: Mapping[str, Any]) -> torch.nn.Module:
        backbone = _Pixels(float(options.get("scale", 1.0)))
        prov = _provenance("test-count-video", options)
        return FrozenEncoder(backbone, dim=6, d_model=spec.d_model, provenance=prov)

    def text(spec: ModelSpec, options: Mapping[str, Any]) -> torch.nn.Module:
        prov = _provenance("test-count-text", options)
        return FrozenEncoder(_bytes, dim=3, d_model=spec.d_model, provenance=prov)

    register("video", "test-count-video")(video)
    register("text", "test-count-text")(text)
    COUNTED.update(video=0, text=0)
    yield {"video": "test-count-video", "text": "test-count-text"}
    registry.unregister("video", "test-count-video")
    registry.unregister("text", "test-count-text")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("embcache") / "data"
    generate(out, clips=8, seed=16, segments_per_clip=2)
    return out


def _split(data: Path, name: str) -> WindowSet:
    return load_split(data / name, SPEC, WindowConfig())


def test_each_item_is_embedded_once_then_read_from_the_cache(
    counting: dict[str, str], data: Path, tmp_path: Path
) -> None:
    train, test = _split(data, "train"), _split(data, "test")
    model = FusionModel(SPEC, encoders=counting)
    cache = tmp_path / "cache"
    feats, report = cached_features(model, train, cache, "train")
    assert report.embedded == {"video": len(train.frames), "text": len(train.texts)}
    assert COUNTED == report.embedded  # each unique item once, though windows overlap
    x_train = EmbeddedWindows(train, feats, SPEC)
    fit(model, x_train, train.labels.tolist(), TrainConfig(epochs=2, batch_size=16))
    test_feats, _ = cached_features(model, test, cache, "test")
    evaluate(model, EmbeddedWindows(test, test_feats, SPEC), test.labels.tolist())
    both = {
        "video": len(train.frames) + len(test.frames),
        "text": len(train.texts) + len(test.texts),
    }
    assert COUNTED == both  # training and all seven evaluations ran no backbone
    again, report = cached_features(FusionModel(SPEC, encoders=counting), train, cache, "train")
    assert report.embedded == {} and report.cached == {"video": len(train.frames),
                                                       "text": len(train.texts)}  # fmt: skip
    assert COUNTED == both
    np.testing.assert_array_equal(again["video"], feats["video"])  # what the first run used


def test_another_encoder_identity_misses_the_cache(
    counting: dict[str, str], data: Path, tmp_path: Path
) -> None:
    train = _split(data, "train")
    model = FusionModel(SPEC, encoders=counting)
    cached_features(model, train, tmp_path, "train")
    for options in ({"scale": 2.0}, {"sha": "f" * 64}):  # other options, other weights
        other = FusionModel(SPEC, encoders={**counting, "video": EncoderChoice(
            counting["video"], options)})  # fmt: skip
        assert cache_path(tmp_path, "train", train, other, "video") != cache_path(
            tmp_path, "train", train, model, "video"
        )
        feats, report = cached_features(other, train, tmp_path, "train")
        assert report.embedded == {"video": len(train.frames)}
        assert report.cached == {"text": len(train.texts)}
    scaled = FusionModel(SPEC, encoders={**counting, "video": EncoderChoice(
        counting["video"], {"scale": 2.0})})  # fmt: skip
    feats, _ = cached_features(scaled, train, tmp_path, "train")
    base, _ = cached_features(model, train, tmp_path, "train")
    np.testing.assert_allclose(feats["video"], 2 * base["video"].astype(np.float32), rtol=2e-3)


def test_a_corrupt_or_partial_cache_file_is_embedded_again_and_rewritten(
    counting: dict[str, str], data: Path, tmp_path: Path
) -> None:
    train = _split(data, "train")
    model = FusionModel(SPEC, encoders=counting)
    want, _ = cached_features(model, train, tmp_path, "train")
    path = cache_path(tmp_path, "train", train, model, "video")
    whole = path.read_bytes()
    for broken in (b"not a numpy file", whole[: len(whole) // 2]):
        path.write_bytes(broken)
        COUNTED["video"] = 0
        feats, report = cached_features(model, train, tmp_path, "train")
        assert report.embedded == {"video": len(train.frames)}
        assert COUNTED["video"] == len(train.frames)
        np.testing.assert_array_equal(feats["video"], want["video"])
        assert path.read_bytes() == whole  # rewritten whole
    assert not list(tmp_path.glob("*.tmp"))


def test_features_give_the_backbones_logits(counting: dict[str, str], data: Path) -> None:
    torch.manual_seed(0)
    train = _split(data, "train")
    model = FusionModel(SPEC, encoders=counting).eval()  # audio: builtin, raw in both paths
    feats = {m: embed_items(model, train, m).astype(np.float16) for m in ("video", "text")}
    idx = list(range(0, len(train), max(1, len(train) // 24)))[:24]
    with torch.no_grad():
        direct = model(collate([train.inputs(i) for i in idx], SPEC))
        COUNTED.update(video=0, text=0)
        cached = model(EmbeddedWindows(train, feats, SPEC).batch(idx))
    assert COUNTED == {"video": 0, "text": 0}
    torch.testing.assert_close(cached, direct, atol=1e-2, rtol=0)
    assert not torch.allclose(cached, torch.zeros_like(cached))


def test_train_and_eval_say_what_they_embed_and_reuse_the_cache(
    counting: dict[str, str], data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    argv = ["train", str(data), "--epochs", "1", "--device", "cpu",
            "--encoders", "video=test-count-video"]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "loading:" in err and "training: 1 epochs in" in err
    assert "embedding train: video" in err and "(cached next time)" in err
    metrics = json.loads((tmp_path / "a" / "config.json").read_text())["metrics"]
    assert {"seconds", "seconds_embedding", "seconds_training"} <= set(metrics)
    assert COUNTED["video"] > 0
    COUNTED["video"] = 0
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    assert "video" in capsys.readouterr().err.split("read from the cache")[0]
    assert main(["eval", str(tmp_path / "b"), str(data), "--device", "cpu"]) == 0
    assert COUNTED["video"] == 0  # the second train and eval ran no backbone


def test_train_on_efficientnet_prints_the_timings(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_packages("efficientnet-lite0")
    argv = ["train", str(data), "--out", str(tmp_path / "ck"), "--quick", "--epochs", "1",
            "--device", "cpu", "--encoders", "video=efficientnet-lite0"]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "embedding train: video" in err and "frames in" in err and "training: 1 epochs" in err
