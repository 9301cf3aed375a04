"""models/late_fusion.py: attention fusion plus one vote per present modality.

Small random models with builtin encoders: a vote moves the prediction only where its
modality is present, silent votes leave attention's prediction as it was, the experts are
trained (once, not twice) by ``fit``, and the model saves, loads, exports to ONNX and runs
incrementally like the attention model. ``streamer train --fusion`` picks it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from test_export import fuse_inputs, sliding_windows

from models.checkpoint import LATE_FUSION_CLASS, load_checkpoint, save_checkpoint
from models.fusion import Encoded, FusionModel
from models.incremental import IncrementalFusion
from models.late_fusion import LateFusionModel
from models.spec import ModelSpec
from models.training import TrainConfig, fit
from models.windows import as_batches
from streamer.errors import ConfigError
from streamer.training.commands import fusion_for

SPEC = ModelSpec(d_model=32)
VIDEO, AUDIO, TEXT = 0, 1, 2


def model(seed: int = 0) -> LateFusionModel:
    torch.manual_seed(seed)
    return LateFusionModel(SPEC).eval()


def encoded(b: int, seed: int) -> Encoded:
    return Encoded(*fuse_inputs(b, 8, 8, 3, SPEC, torch.Generator().manual_seed(seed)))


def silence(m: LateFusionModel) -> None:
    for head in m.experts.heads:
        torch.nn.init.zeros_(head[1].weight)
        torch.nn.init.zeros_(head[1].bias)


def test_silent_votes_leave_attention_as_it_was() -> None:
    m, enc = model(), encoded(6, seed=1)
    silence(m)
    with torch.no_grad():
        got = torch.softmax(m.fuse(enc), 1)
        want = torch.softmax(FusionModel.fuse(m, enc), 1)
    assert float((got - want).abs().max()) < 1e-5


def test_a_vote_counts_only_where_its_modality_is_present() -> None:
    m, enc = model(), encoded(6, seed=2)
    silence(m)
    with torch.no_grad():
        m.experts.heads[VIDEO][1].bias[7] = 50.0  # video says "7", loudly
        enc.video_mask[:3] = False  # windows 0-2 have no video
        enc.video_mask[3:, 0] = True  # 3-5 have some
        pred = m.fuse(enc).argmax(1).tolist()
        attention = FusionModel.fuse(m, enc).argmax(1).tolist()
    assert pred[3:] == [7, 7, 7]
    assert pred[:3] == attention[:3]


def test_fit_trains_the_votes_once(tmp_path: Path) -> None:
    m = model().train()
    before = [p.detach().clone() for p in m.experts.parameters()]
    windows = [w for call in sliding_windows(SPEC, seed=3) for w in call][:24]
    labels = [i % len(SPEC.labels) for i in range(len(windows))]
    reports = fit(m, windows, labels, TrainConfig(epochs=2, batch_size=8))
    assert len(reports) == 2 and all(r.loss == r.loss for r in reports)  # not NaN
    after = list(m.experts.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_saves_loads_and_runs_incrementally(tmp_path: Path) -> None:
    m = model(seed=4)
    info = save_checkpoint(m, tmp_path / "ck")
    assert info.config["architecture"]["class"] == LATE_FUSION_CLASS
    loaded, _ = load_checkpoint(tmp_path / "ck")
    assert isinstance(loaded, LateFusionModel)
    enc = encoded(4, seed=5)
    with torch.no_grad():
        assert torch.allclose(loaded.fuse(enc), m.fuse(enc), atol=1e-6)
    inc = IncrementalFusion(loaded)
    for call in sliding_windows(SPEC, seed=6)[:4]:
        with torch.no_grad():
            want = torch.softmax(loaded(as_batches(call, SPEC).batch(list(range(len(call))))), 1)
        assert float((inc(call) - want).abs().max()) < 1e-4


def test_exports_to_onnx_and_matches(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from models.export import export_model
    from models.onnx_runtime import OnnxFusion

    m = model(seed=7)
    export_model(m, "onnx", tmp_path / "onnx")
    got_rt, want_rt = OnnxFusion(tmp_path / "onnx", intra_op_threads=1), IncrementalFusion(m)
    for call in sliding_windows(SPEC, seed=8)[:6]:
        assert float((got_rt(call) - want_rt(call)).abs().max()) < 1e-4


def test_fusion_for_the_encoders() -> None:
    assert fusion_for("auto", None) == "attention"
    assert fusion_for("auto", {"video": "builtin"}) == "attention"
    assert fusion_for("auto", {"video": "efficientnet-lite0"}) == "late"
    assert fusion_for("attention", {"text": "wordllama"}) == "attention"
    with pytest.raises(ConfigError, match="--fusion.*unknown 'mean'"):
        fusion_for("mean", None)


def test_the_text_vote_reads_only_the_events_fusion_reads() -> None:
    m = model(seed=9)
    enc = Encoded(*fuse_inputs(2, 8, 8, SPEC.max_text_events + 4, SPEC,
                               torch.Generator().manual_seed(10)))  # fmt: skip
    enc = replace(enc, text_mask=torch.ones_like(enc.text_mask))
    oldest = enc.text_pos_s.argmin(1)
    moved = enc.text.clone()
    push = 100.0 * torch.randn(SPEC.d_model, generator=torch.Generator().manual_seed(11))
    moved[torch.arange(2), oldest] += push  # an event too old to be read changes nothing
    with torch.no_grad():
        assert torch.allclose(m.fuse(enc), m.fuse(replace(enc, text=moved)), atol=1e-5)
