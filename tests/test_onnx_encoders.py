"""``onnx:/abs/path/model.onnx`` encoders: a tiny torch module exported here, its sidecar
``model.json``; the encoder equals the module + projection, a checkpoint naming it is small,
reloads, and refuses another graph, another sidecar or a missing file in one line."""

from __future__ import annotations

import importlib
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from conftest import IN_CI, require_tool
from torch import nn

from models.checkpoint import CheckpointFormatError, load_checkpoint, save_checkpoint
from models.encoders.frozen import FrozenEncoder
from models.encoders.onnx_file import OnnxBackbone, OnnxEncoderError
from models.encoders.registry import EncoderChoice, UnknownEncoderError, build_encoder
from models.fusion import FusionModel
from models.spec import ModelSpec
from streamer.cli import build_parser, main


def _require(module: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError:
        if IN_CI:
            pytest.fail(f"{module} is not installed (CI installs the onnx extra)")
        pytest.skip(f"{module} is not installed here (outside CI, so skipped)", True)


_require("onnx")
_require("onnxruntime")

SPEC = ModelSpec()
MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


class Conv(nn.Module):
    """float NCHW images -> [N, 8, H/2, W/2] (the encoder mean-pools H and W)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x))


class Frames(nn.Module):
    """[N, T, 80] frames of a waveform -> [N, T, 12] (the encoder mean-pools T)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(80, 12)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.lin(wave.reshape(wave.shape[0], -1, 80))


def export(module: nn.Module, example: torch.Tensor, path: Path, *, dynamic: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notices
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(
            module.eval(), (example,), str(path), dynamo=False, opset_version=17,
            input_names=["x"], output_names=["y"],
            dynamic_axes={"x": {0: "n"}, "y": {0: "n"}} if dynamic else None,
        )  # fmt: skip
    return path


def sidecar(path: Path, doc: dict[str, Any]) -> None:
    path.with_name("model.json").write_text(json.dumps(doc))


VIDEO = {
    "modality": "video", "licence": "MIT",
    "input": {"name": "x", "size": [SPEC.image_size, SPEC.image_size], "layout": "NCHW",
              "dtype": "float32", "mean": MEAN, "std": STD, "scale": 255},
    "output": {"name": "y", "dim": 8},
}  # fmt: skip
AUDIO = {
    "modality": "audio",
    "input": {"name": "x", "sample_rate": SPEC.audio_rate, "window": 3200},
    "output": {"name": "y", "dim": 12},
}


@pytest.fixture
def video(tmp_path: Path) -> tuple[Path, nn.Module]:
    torch.manual_seed(1)
    conv = Conv()
    path = export(conv, torch.zeros(2, 3, 64, 64), tmp_path / "video" / "model.onnx", dynamic=True)
    sidecar(path, VIDEO)
    return path, conv


@pytest.fixture
def audio(tmp_path: Path) -> tuple[Path, nn.Module]:
    torch.manual_seed(2)
    frames = Frames()
    path = export(frames, torch.zeros(1, 3200), tmp_path / "audio" / "model.onnx", dynamic=False)
    sidecar(path, AUDIO)
    return path, frames


def frames_batch(n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(n)
    return torch.randint(0, 256, (n, SPEC.image_size, SPEC.image_size, 3), generator=g).to(
        torch.uint8
    )


def test_video_equals_the_module_and_projection(video: tuple[Path, nn.Module]) -> None:
    path, conv = video
    enc = build_encoder("video", EncoderChoice(f"onnx:{path}"), SPEC)
    assert isinstance(enc, FrozenEncoder) and isinstance(enc.backbone, OnnxBackbone)
    assert not enc.backbone.per_item  # a dynamic batch axis: one run per batch
    frames = frames_batch(5)
    x = frames.permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        want = enc.proj(conv(x).mean(dim=(2, 3)))
        got = enc(frames)
    assert got.shape == (5, SPEC.d_model)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert set(enc.state_dict()) == {"proj.0.weight", "proj.0.bias", "proj.1.weight", "proj.1.bias"}
    assert enc.provenance.licence == "MIT" and enc.provenance.package is None


def test_audio_with_a_fixed_batch_runs_item_by_item(audio: tuple[Path, nn.Module]) -> None:
    path, frames = audio
    enc = build_encoder("audio", EncoderChoice(f"onnx:{path}"), SPEC)
    assert isinstance(enc, FrozenEncoder) and isinstance(enc.backbone, OnnxBackbone)
    assert enc.backbone.per_item  # exported at batch 1, no dynamic axis
    wave = torch.randn(4, SPEC.segment_samples, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = enc.proj(frames(wave[:, -3200:]).mean(dim=1))  # the last window, T-pooled
        got = enc(wave)
    assert got.shape == (4, SPEC.d_model)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    short = enc.backbone(wave[:, :1000])  # zero-padded at the end to the window
    torch.testing.assert_close(short, frames(F.pad(wave[:, :1000], (0, 2200))).mean(dim=1))


def test_resizing_layout_and_uint8_input(tmp_path: Path) -> None:
    class Nhwc(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.float().mean(dim=(1, 2))  # [N, 3]

    path = export(Nhwc(), torch.zeros(1, 32, 48, 3, dtype=torch.uint8), tmp_path / "m.onnx",
                  dynamic=True)  # fmt: skip
    doc = {"modality": "video", "input": {"name": "x", "size": [32, 48], "layout": "NHWC",
           "dtype": "uint8"}, "output": {"name": "y", "dim": 3}}  # fmt: skip
    sidecar(path, doc)
    enc = build_encoder("video", EncoderChoice(f"onnx:{path}"), SPEC)
    assert isinstance(enc, FrozenEncoder)
    solid = torch.full((2, SPEC.image_size, SPEC.image_size, 3), 200, dtype=torch.uint8)
    solid[1, ..., 0] = 10
    torch.testing.assert_close(enc.features(solid), torch.tensor([[200.0] * 3, [10, 200, 200]]))
    assert enc.provenance.licence == "unknown"


def test_a_checkpoint_names_the_file_and_refuses_another(
    video: tuple[Path, nn.Module], audio: tuple[Path, nn.Module], tmp_path: Path
) -> None:
    vpath, _ = video
    apath, _ = audio
    names = {"video": f"onnx:{vpath}", "audio": f"onnx:{apath}"}
    model = FusionModel(SPEC, encoders=names).eval()
    builtin = save_checkpoint(FusionModel(SPEC), tmp_path / "builtin")
    info = save_checkpoint(model, tmp_path / "ck")
    small = (tmp_path / "ck" / "model.safetensors").stat().st_size
    assert small < (tmp_path / "builtin" / "model.safetensors").stat().st_size
    assert builtin.config["architecture"]["encoders"]["video"]["name"] == "builtin"
    record = info.config["architecture"]["encoders"]["video"]
    assert record["name"] == names["video"] and record["weights"]["file"] == str(vpath)
    loaded, _ = load_checkpoint(tmp_path / "ck")
    frames = frames_batch(3)
    assert torch.equal(loaded.encode_video(frames), model.encode_video(frames))

    text = vpath.with_name("model.json").read_text()
    sidecar(vpath, {**VIDEO, "input": {**VIDEO["input"], "mean": [0.0, 0.0, 0.0]}})
    with pytest.raises(CheckpointFormatError, match="has sha256 .* trained with") as e:
        load_checkpoint(tmp_path / "ck")  # same graph, another sidecar
    assert "\n" not in str(e.value)
    vpath.with_name("model.json").write_text(text)
    torch.manual_seed(9)
    export(Conv(), torch.zeros(2, 3, 64, 64), vpath, dynamic=True)  # other weights
    with pytest.raises(CheckpointFormatError, match=f"{vpath} has sha256 .* trained with"):
        load_checkpoint(tmp_path / "ck")
    vpath.unlink()
    with pytest.raises(CheckpointFormatError, match=f"{vpath} is not a file") as e:
        load_checkpoint(tmp_path / "ck")
    assert "\n" not in str(e.value)


def test_a_relative_path_is_refused_in_one_line(video: tuple[Path, nn.Module]) -> None:
    with pytest.raises(UnknownEncoderError, match="the path after 'onnx:' must be absolute"):
        build_encoder("video", EncoderChoice("onnx:model.onnx"), SPEC)
    path, _ = video
    known = r"known: builtin, (\S+, )*onnx:/abs/path/model.onnx"
    with pytest.raises(UnknownEncoderError, match=known):
        build_encoder("video", EncoderChoice("clip"), SPEC)
    with pytest.raises(OnnxEncoderError, match="takes no options"):
        build_encoder("video", EncoderChoice(f"onnx:{path}", {"size": 3}), SPEC)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d["output"].pop("dim"), r"model\.json: output\.dim: Field required"),
        (lambda d: d["input"].update(layout="NCWH"), r"input\.layout: Input should be 'NCHW'"),
        (lambda d: d["input"].update(size=[64]), r"input\.size"),
        (lambda d: d["input"].update(colour=1), r"input\.colour: Extra inputs"),
        (lambda d: d.update(modality="audio"), r"modality is 'audio', used as a video encoder"),
        (lambda d: d["input"].update(dtype="uint8"), r"mean, scale, std apply to float32"),
        (lambda d: d["input"].update(name="images"), r"input\.name 'images' is not an input"),
        (lambda d: d["output"].update(name="z"), r"output\.name 'z' is not an output"),
        (lambda d: d["output"].update(dim=16), r"output\.dim is 16 but output 'y' has shape"),
    ],
)
def test_a_bad_sidecar_names_the_field(
    video: tuple[Path, nn.Module], tmp_path: Path, edit: Any, match: str
) -> None:
    path, _ = video
    doc = json.loads(json.dumps(VIDEO))
    edit(doc)
    sidecar(path, doc)
    with pytest.raises(OnnxEncoderError, match=match) as e:
        build_encoder("video", EncoderChoice(f"onnx:{path}"), SPEC)
    assert "\n" not in str(e.value)


def test_a_missing_sidecar_or_onnxruntime(
    video: tuple[Path, nn.Module], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = video
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(
        OnnxEncoderError, match=r"needs onnxruntime: pip install 'streamer\[onnx\]'"
    ):
        build_encoder("video", EncoderChoice(f"onnx:{path}"), SPEC)
    path.with_name("model.json").unlink()
    with pytest.raises(OnnxEncoderError, match="no sidecar .*model.json"):
        build_encoder("video", EncoderChoice(f"onnx:{path}"), SPEC)


def test_train_takes_encoder_names(
    video: tuple[Path, nn.Module], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = video
    args = build_parser().parse_args(
        ["train", "d", "--out", "o", "--encoders", f"video=onnx:{path}, audio=builtin"]
    )
    assert args.encoders == (("video", f"onnx:{path}"), ("audio", "builtin"))
    assert build_parser().parse_args(["train", "d", "--out", "o"]).encoders == ()
    for bad in ("video", "depth=x", "video=a,video=b", "video="):
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args(["train", "d", "--out", "o", "--encoders", bad])
        assert exit_.value.code == 2
        assert "expected MODALITY=NAME pairs" in capsys.readouterr().err
    gone = tmp_path / "gone.onnx"  # said before any data is read
    assert main(["train", str(tmp_path), "--out", str(tmp_path / "o"), "--encoders",
                 f"video=onnx:{gone}"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert err == f"streamer: error: --encoders: encoder 'onnx:{gone}': {gone} is not a file"


def test_quick_training_on_top_of_an_onnx_encoder(
    video: tuple[Path, nn.Module], tmp_path: Path
) -> None:
    require_tool("espeak-ng")
    from streamer.datasets.avdigits import generate

    generate(tmp_path / "data", clips=8, seed=7)
    path, _ = video
    ck = tmp_path / "ck"
    argv = ["train", str(tmp_path / "data"), "--out", str(ck), "--quick", "--epochs", "1",
            "--device", "cpu", "--encoders", f"video=onnx:{path}"]  # fmt: skip
    assert main(argv) == 0
    cfg = json.loads((ck / "config.json").read_text())
    assert cfg["architecture"]["encoders"]["video"]["name"] == f"onnx:{path}"
    assert f"--encoders video=onnx:{path}" in cfg["command"]
    model, _ = load_checkpoint(ck)
    assert model.encode_video(frames_batch(2)).shape == (2, SPEC.d_model)


def test_torchscript_refuses_rather_than_bake_the_graph_in(
    video: tuple[Path, nn.Module], tmp_path: Path
) -> None:
    from models.export import ExportError, export_model

    path, _ = video
    model = FusionModel(SPEC, encoders={"video": f"onnx:{path}"})
    # traced, onnxruntime's output would become a constant of the exported graph: TorchScript
    # refuses it up front, in one line (ONNX exports the projection: test_export_backbones)
    with pytest.raises(ExportError, match="runs outside torch") as e:
        export_model(model, "torchscript", tmp_path / "export")
    assert "\n" not in str(e.value)
