"""models/export.py and models/onnx_runtime.py: exported graphs equal the torch model.

The shipped checkpoint is exported once per format (module fixtures). Each ONNX graph is run
with onnxruntime and each TorchScript graph after ``torch.jit.load``, at several batch sizes
and window lengths, against the torch model (1e-4); the ONNX incremental runtime is held to
``IncrementalFusion`` over sliding windows with missing modalities. The export-friendly
rewrites in ``models/`` (STFT as a conv1d, last-step gather instead of packing, sort-free
``recent_text_mask``) are held to the implementations they replace.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from models.checkpoint import default_checkpoint_dir, load_checkpoint
from models.export import (
    GRAPHS,
    MANIFEST,
    ExportError,
    export,
    export_model,
    is_exported,
    read_manifest,
)
from models.features import LogMel
from models.fusion import Encoded, FusionModel, recent_text_mask
from models.incremental import IncrementalFusion, WindowInputs
from models.spec import ModelSpec
from models.tokenizer import batch_encode

ort = pytest.importorskip("onnxruntime")

from models.onnx_runtime import OnnxFusion  # noqa: E402

TOL = 1e-4


@pytest.fixture(scope="module")
def model() -> FusionModel:
    return load_checkpoint(default_checkpoint_dir())[0]


@pytest.fixture(scope="module")
def spec(model: FusionModel) -> ModelSpec:
    return model.spec


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx")
    export(None, "onnx", out)
    return out


@pytest.fixture(scope="module")
def ts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("torchscript")
    export(default_checkpoint_dir(), "torchscript", out)
    return out


# -- random graph inputs ---------------------------------------------------------------------


def encoder_inputs(
    graph: str, n: int, spec: ModelSpec, g: torch.Generator, length: int = 9
) -> tuple[torch.Tensor, ...]:
    if graph == "video_encoder":
        size = spec.image_size
        return (torch.randint(0, 256, (n, size, size, 3), generator=g).to(torch.uint8),)
    if graph == "audio_encoder":
        return (torch.randn(n, spec.segment_samples, generator=g) * 0.3,)
    ids = torch.randint(1, 257, (n, length), generator=g)
    lengths = torch.randint(0, length + 1, (n,), generator=g)  # some empty texts
    return ids, lengths


def fuse_inputs(
    b: int, tv: int, ta: int, tt: int, spec: ModelSpec, g: torch.Generator
) -> tuple[torch.Tensor, ...]:
    d = spec.d_model

    def mask(t: int) -> torch.Tensor:
        return torch.rand(b, t, generator=g) > 0.3

    return (
        torch.randn(b, tv, d, generator=g),
        mask(tv),
        torch.randn(b, ta, d, generator=g),
        mask(ta),
        torch.randn(b, tt, d, generator=g),
        mask(tt),
        torch.rand(b, tt, generator=g) * 2.5,
    )


def torch_graph(model: FusionModel, graph: str, *args: torch.Tensor) -> torch.Tensor:
    """What the graph must compute, from the torch model itself (logits for ``fuse``)."""
    with torch.inference_mode():
        if graph == "video_encoder":
            return model.encode_video(*args)
        if graph == "audio_encoder":
            return model.encode_audio(*args)
        if graph == "text_encoder":
            return model.encode_text(*args)
        return model.fuse(Encoded(*args))


ENCODER_CASES = [(1, 9), (3, 1), (8, 40)]  # (N, text length L)
FUSE_CASES = [  # (B, Tv, Ta, Tt): window lengths, no text, more text than max_text_events
    (1, 8, 8, 0),
    (3, 8, 8, 3),
    (8, 4, 4, 12),
    (2, 12, 12, 1),
    (5, 0, 8, 2),
]


def session(path: Path) -> Any:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


# -- ONNX --------------------------------------------------------------------------------------


@pytest.mark.parametrize("graph", GRAPHS[:3])
def test_onnx_encoders_match_torch(
    model: FusionModel, spec: ModelSpec, onnx_dir: Path, graph: str
) -> None:
    sess, g = session(onnx_dir / f"{graph}.onnx"), torch.Generator().manual_seed(1)
    names = [i.name for i in sess.get_inputs()]
    for n, length in ENCODER_CASES:
        args = encoder_inputs(graph, n, spec, g, length)
        (got,) = sess.run(["embedding"], dict(zip(names, (a.numpy() for a in args), strict=True)))
        want = torch_graph(model, graph, *args)
        assert got.shape == (n, spec.d_model)
        assert float(np.abs(got - want.numpy()).max()) < TOL, (graph, n)


def test_onnx_fuse_matches_torch(model: FusionModel, spec: ModelSpec, onnx_dir: Path) -> None:
    sess, g = session(onnx_dir / "fuse.onnx"), torch.Generator().manual_seed(2)
    names = [i.name for i in sess.get_inputs()]
    for case in FUSE_CASES:
        args = fuse_inputs(*case, spec, g)
        feed = dict(zip(names, (a.numpy() for a in args), strict=True))
        logits, probs = sess.run(["logits", "probs"], feed)
        want = torch_graph(model, "fuse", *args)
        assert logits.shape == probs.shape == (case[0], len(spec.labels))
        assert float(np.abs(logits - want.numpy()).max()) < TOL, case
        assert float(np.abs(probs - torch.softmax(want, -1).numpy()).max()) < TOL, case


def test_manifest_and_opset(onnx_dir: Path, spec: ModelSpec) -> None:
    import onnx

    manifest = json.loads((onnx_dir / MANIFEST).read_text())
    info = load_checkpoint(default_checkpoint_dir())[1]
    assert manifest["runtime"] == "onnx" and manifest["opset"] >= 17
    assert manifest["checkpoint"] == {"name": info.name, "version": info.version}
    assert ModelSpec.from_dict(manifest["spec"]) == spec
    assert manifest["files"] == {g: f"{g}.onnx" for g in GRAPHS}
    assert read_manifest(onnx_dir) == manifest
    assert is_exported(onnx_dir, info.version, "onnx")
    assert not is_exported(onnx_dir, "sha256:other", "onnx")
    assert not is_exported(onnx_dir, info.version, "torchscript")
    for g in GRAPHS:
        proto = onnx.load(str(onnx_dir / f"{g}.onnx"))
        onnx.checker.check_model(proto)
        assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17


def test_export_is_deterministic(model: FusionModel, onnx_dir: Path, tmp_path: Path) -> None:
    info = load_checkpoint(default_checkpoint_dir())[1]
    paths = export_model(model, "onnx", tmp_path, name=info.name, version=info.version)
    assert [p.name for p in paths] == [*(f"{g}.onnx" for g in GRAPHS), MANIFEST]
    for p in paths:
        if p.name != MANIFEST:
            assert p.read_bytes() == (onnx_dir / p.name).read_bytes(), p.name
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted(p.name for p in paths)


# -- TorchScript -------------------------------------------------------------------------------


def jit_load(path: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load is deprecated
        return torch.jit.load(str(path))  # type: ignore[no-untyped-call]


def test_torchscript_reloads_and_matches(model: FusionModel, spec: ModelSpec, ts_dir: Path) -> None:
    manifest = read_manifest(ts_dir)
    assert manifest["runtime"] == "torchscript"
    assert manifest["files"] == {g: f"{g}.pt" for g in GRAPHS}
    g = torch.Generator().manual_seed(3)
    for graph in GRAPHS[:3]:
        module = jit_load(ts_dir / f"{graph}.pt")
        for n, length in ENCODER_CASES:
            args = encoder_inputs(graph, n, spec, g, length)
            with torch.inference_mode():
                got = module(*args)
            assert float((got - torch_graph(model, graph, *args)).abs().max()) < TOL
    fuse = jit_load(ts_dir / "fuse.pt")
    for case in FUSE_CASES:
        args = fuse_inputs(*case, spec, g)
        with torch.inference_mode():
            logits, probs = fuse(*args)
        want = torch_graph(model, "fuse", *args)
        assert float((logits - want).abs().max()) < TOL, case
        assert float((probs - torch.softmax(want, -1)).abs().max()) < TOL, case


# -- errors ------------------------------------------------------------------------------------


def test_bad_format_and_bad_directories(tmp_path: Path, ts_dir: Path) -> None:
    with pytest.raises(ExportError, match=r"unknown export format 'tflite'; expected .*onnx"):
        export(None, "tflite", tmp_path / "x")
    assert not (tmp_path / "x").exists()
    with pytest.raises(ExportError, match="no export.json"):
        read_manifest(tmp_path)
    with pytest.raises(ExportError, match="'torchscript' export, not onnx"):
        OnnxFusion(ts_dir)
    (tmp_path / "file").write_text("")
    with pytest.raises(ExportError, match="cannot create export directory"):
        export(None, "onnx", tmp_path / "file" / "sub")


# -- the incremental ONNX runtime ------------------------------------------------------------


def sliding_windows(spec: ModelSpec, seed: int) -> list[list[WindowInputs]]:
    """Calls of one or two windows from two sessions: 2 s windows, 0.5 s hop, items keyed
    by their global slot, whole modalities missing now and then, some slots missing."""
    rng = np.random.default_rng(seed)
    slots, hop, slot_s = 8, 2, 1.0 / spec.fps
    frames: dict[tuple[str, int], np.ndarray | None] = {}
    waves: dict[tuple[str, int], np.ndarray | None] = {}
    texts: dict[str, list[tuple[Hashable, str, float]]] = {"a": [], "b": []}

    def item(store: dict[Any, Any], key: tuple[str, int], make: Any) -> Any:
        if key not in store:
            store[key] = make() if rng.random() > 0.2 else None
        return store[key]

    def window(sid: str, w: int) -> WindowInputs:
        first = w * hop
        start, end = first * slot_s, (first + slots) * slot_s
        for g in range(first + slots - hop, first + slots):  # text for the new slots
            for _ in range(int(rng.poisson(3.0 if 20 <= g < 26 else 0.7))):
                t = (g + float(rng.random())) * slot_s
                body = "".join(rng.choice(list("seven eight 数 🙂"), size=int(rng.integers(0, 30))))
                texts[sid].append((("t", len(texts[sid])), body, t))
        video, audio = [], []
        for g in range(first, first + slots):
            f = item(frames, (sid, g), lambda: rng.integers(0, 256, (64, 64, 3), np.uint8))
            a = item(waves, (sid, g), lambda: rng.standard_normal(4000).astype(np.float32))
            video.append(None if f is None else (("v", g), f))
            audio.append(None if a is None else (("a", g), a * 0.2))
        text = [(k, s, t - start) for k, s, t in texts[sid] if start <= t < end]
        gone = rng.choice(["video", "audio", "text", "none"], p=[0.1, 0.1, 0.1, 0.7])
        return WindowInputs(
            sid,
            [None] * slots if gone == "video" else video,
            [None] * slots if gone == "audio" else audio,
            [] if gone == "text" else text,
        )

    calls, nxt = [], {"a": 0, "b": 0}
    for step in range(16):
        batch = []
        for sid, n in (("a", 1), ("b", 2 if step % 2 else 0)):  # b lags, then catches up
            for _ in range(n):
                batch.append(window(sid, nxt[sid]))
                nxt[sid] += 1
        calls.append(batch)
    return calls


def test_onnx_incremental_matches_incremental_fusion(model: FusionModel, onnx_dir: Path) -> None:
    want_rt = IncrementalFusion(model)
    got_rt = OnnxFusion(onnx_dir, intra_op_threads=2)
    calls = sliding_windows(model.spec, seed=4)
    assert sum(len(c) for c in calls) >= 20
    worst = 0.0
    for batch in calls:
        got, want = got_rt(batch), want_rt(batch)
        assert got.dtype == torch.float32 and got.device.type == "cpu"
        assert got.shape == want.shape == (len(batch), len(model.spec.labels))
        worst = max(worst, float((got - want).abs().max()))
        assert got_rt.encoded == want_rt.encoded
        assert got_rt.cache_size() == want_rt.cache_size()
    assert worst < TOL, worst
    assert got_rt.session_count == 2 and got_rt.encoded["video"] > 0
    got_rt.drop_session("a")
    assert got_rt.session_count == 1 and got_rt.cache_size("a") == 0
    assert got_rt([]).shape == (0, len(model.spec.labels))
    assert (got_rt.name, got_rt.version) == (
        load_checkpoint(default_checkpoint_dir())[1].name,
        load_checkpoint(default_checkpoint_dir())[1].version,
    )


# -- the export-friendly rewrites in models/ equal what they replace ----------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.trace
def test_log_mel_equals_torch_stft() -> None:
    lm = LogMel()
    window = torch.hann_window(lm.n_fft)
    wave = torch.randn(6, 4000, generator=torch.Generator().manual_seed(5))
    wave *= torch.tensor([1.0, 0.1, 1e-3, 3.0, 0.5, 0.0]).unsqueeze(1)
    spec = torch.stft(wave, lm.n_fft, lm.hop, window=window, center=True, return_complex=True)
    want = torch.log(torch.matmul(lm.fbank.t(), spec.abs().square()) + 1e-6)
    assert float((lm(wave) - want).abs().max()) < 1e-5  # eager: torch.stft
    traced = torch.jit.trace(lm, (wave,))  # what export records: the DFT basis as a conv1d
    kinds = {node.kind() for node in traced.graph.nodes()}
    assert "aten::stft" not in kinds and "aten::_convolution" in kinds
    assert float((traced(wave) - want).abs().max()) < 1e-5


def test_text_gather_equals_packed_gru(model: FusionModel) -> None:
    enc = model.text_encoder
    ids, lengths = batch_encode(["one", "", "two three four five", "数字 🙂", "x" * 90])
    with torch.inference_mode():
        x = enc.embed(ids)
        packed = pack_padded_sequence(x, lengths.clamp(1), batch_first=True, enforce_sorted=False)
        _, h_n = enc.gru(packed)
        want = enc.proj(enc.norm(h_n[0]))
        assert float((enc(ids, lengths) - want).abs().max()) < 1e-5


def test_recent_text_mask_equals_sort_reference() -> None:
    def reference(mask: torch.Tensor, pos: torch.Tensor, keep: int) -> torch.Tensor:
        if mask.shape[1] <= keep:
            return mask
        score = torch.where(mask, pos, torch.full_like(pos, -torch.inf)).flip(1)
        order = torch.sort(score, dim=1, descending=True, stable=True).indices
        top = mask.shape[1] - 1 - order[:, :keep]
        return mask & torch.zeros_like(mask).scatter_(1, top, True)

    g = torch.Generator().manual_seed(6)
    for _ in range(300):
        tt, keep = (int(torch.randint(lo, hi, (1,), generator=g)) for lo, hi in ((0, 14), (1, 10)))
        mask = torch.rand(3, tt, generator=g) > 0.3
        pos = torch.randint(0, 4, (3, tt), generator=g).float() / 2  # many ties
        assert torch.equal(recent_text_mask(mask, pos, keep), reference(mask, pos, keep))


# -- model.runtime: onnx ------------------------------------------------------------------------


def test_model_runtime_onnx_exports_once_and_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamer.config import ModelConfig, WindowConfig
    from streamer.errors import ConfigError
    from streamer.inference.model import load_model

    target = tmp_path / "onnx"
    cfg = ModelConfig(runtime="onnx", onnx_dir=target)
    loaded = load_model(cfg, WindowConfig())
    assert loaded.runtime == "onnx" and loaded.onnx_dir == target
    assert isinstance(loaded.make_fusion(), OnnxFusion)
    threaded = load_model(ModelConfig(runtime="onnx", onnx_dir=target, threads=3), WindowConfig())
    for graph in threaded.make_fusion()._graphs.values():  # model.threads reach onnxruntime
        assert graph.get_session_options().intra_op_num_threads == 3
    stamp = (target / "fuse.onnx").stat().st_mtime_ns
    load_model(cfg, WindowConfig())  # already exported: reused
    assert (target / "fuse.onnx").stat().st_mtime_ns == stamp
    assert isinstance(load_model(ModelConfig(), WindowConfig()).make_fusion(), IncrementalFusion)

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cached = load_model(ModelConfig(runtime="onnx"), WindowConfig())
    assert cached.onnx_dir is not None and cached.onnx_dir.is_relative_to(tmp_path / "cache")

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"^model\.runtime: onnx needs the onnxruntime") as e:
        load_model(cfg, WindowConfig())
    assert "\n" not in str(e.value)
