"""models/export_backbones.py: an ONNX export and ``model.runtime: onnx`` with encoders
whose backbone runs outside torch (silero-vad, wordllama, an ``onnx:`` file).

The export holds their projections; OnnxFusion rebuilds the backbones from the installed
packages, checked against ``export.json``, and gives IncrementalFusion's probabilities
(1e-4) and tags. A backbone that is not the recorded one is refused in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_onnx_encoders import VIDEO, Conv, export, sidecar
from test_pretrained_encoders import SPEC, choice, require_modules, require_packages, windows

from models.checkpoint import save_checkpoint
from models.export import ExportError, export_model
from models.fusion import FusionModel
from models.incremental import IncrementalFusion
from streamer.config import ModelConfig, WindowConfig
from streamer.inference.model import load_model

pytest.importorskip("onnxruntime")
from models.onnx_runtime import OnnxFusion  # noqa: E402

HOST = {"audio": "silero-vad", "text": "wordllama"}


def host_model(video: str = "efficientnet-lite0") -> FusionModel:
    require_packages("wordllama")
    if not video.startswith("onnx:"):
        require_packages(video)
    require_modules("silero_vad", "onnxruntime", "onnx")
    torch.manual_seed(0)
    names = {**HOST, "video": video}
    return FusionModel(SPEC, encoders={m: choice(n) for m, n in names.items()}).eval()


def same_as_torch(model: FusionModel, onnx: OnnxFusion) -> None:
    inc = IncrementalFusion(model)
    assert onnx.tagging == inc.tagging
    for batch in windows(seed=7, n=4):
        (want, want_tags), (got, got_tags) = inc.infer(batch), onnx.infer(batch)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        assert got_tags == want_tags
    assert onnx.encoded == inc.encoded


def test_pretrained_backbones_export_as_projections_and_run_on_onnx(tmp_path: Path) -> None:
    model = host_model()
    export_model(model, "onnx", tmp_path / "onnx")
    manifest = json.loads((tmp_path / "onnx" / "export.json").read_text())
    # silero and wordllama run outside torch; efficientnet tags from its features
    assert set(manifest["backbones"]) == {"audio", "text", "video"}
    assert manifest["backbones"]["audio"]["weights"]["package"] == "silero-vad"
    assert all(manifest["inputs"][f"{m}_encoder"] == ["features"] for m in manifest["backbones"])
    same_as_torch(model, OnnxFusion(tmp_path / "onnx", intra_op_threads=1))


def test_an_onnx_file_encoder_runs_beside_its_projection(tmp_path: Path) -> None:
    torch.manual_seed(1)
    path = export(Conv(), torch.zeros(2, 3, 64, 64), tmp_path / "v" / "model.onnx", dynamic=True)
    sidecar(path, VIDEO)
    model = host_model(f"onnx:{path}")
    export_model(model, "onnx", tmp_path / "onnx")
    same_as_torch(model, OnnxFusion(tmp_path / "onnx", intra_op_threads=1))


def test_a_backbone_other_than_the_recorded_one_is_refused(tmp_path: Path) -> None:
    export_model(host_model(), "onnx", tmp_path / "onnx")
    manifest_path = tmp_path / "onnx" / "export.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["backbones"]["audio"]["weights"]["version"] = "0.0.1"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match="silero-vad.*0.0.1") as e:
        OnnxFusion(tmp_path / "onnx")
    assert "\n" not in str(e.value)


def test_model_runtime_onnx_takes_the_checkpoint(tmp_path: Path) -> None:
    model = host_model()
    save_checkpoint(model, tmp_path / "ck")
    cfg = ModelConfig(checkpoint=tmp_path / "ck", runtime="onnx", onnx_dir=tmp_path / "onnx")
    loaded = load_model(cfg, WindowConfig())
    fusion = loaded.make_fusion()
    assert isinstance(fusion, OnnxFusion) and fusion.tagging
    same_as_torch(model, fusion)
