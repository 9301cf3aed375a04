"""models/: encoders, fusion, incremental == full recompute, bounded cache, checkpoints.

One device-agnostic suite, run on CPU and again on CUDA when present (``gpu`` marker).
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from models.checkpoint import (
    CheckpointFormatError,
    default_checkpoint_dir,
    load_checkpoint,
    save_checkpoint,
)
from models.features import LogMel, mel_filterbank
from models.fusion import Encoded, FusionModel, recent_text_mask
from models.incremental import IncrementalFusion, WindowInputs
from models.readout import cls_readout
from models.spec import ModelSpec
from models.tokenizer import batch_encode, encode
from models.windows import collate

SPEC = ModelSpec()


def _gpu(*extra: pytest.MarkDecorator) -> list[pytest.MarkDecorator]:
    return [
        pytest.mark.gpu,
        pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
        *extra,
    ]


DEVICES = ["cpu", pytest.param("cuda", marks=_gpu())]
TOL = {"cpu": 1e-4, "cuda": 2e-3}  # CUDA convs may use TF32 and batch-size-dependent kernels


def make_model(device: str = "cpu", seed: int = 0) -> FusionModel:
    torch.manual_seed(seed)
    return FusionModel(SPEC).to(device).eval()


def full_probs(model: FusionModel, windows: list[WindowInputs], device: str) -> torch.Tensor:
    with torch.inference_mode():
        logits = model(collate(windows, SPEC).to(device))
    return torch.softmax(logits, dim=-1).cpu()


# -- a synthetic stream: items keyed by their global slot, windows sliding by one hop --------

WINDOW_SLOTS = 8  # 2 s at 4 slots/s, and 8 audio segments of 0.25 s
HOP_SLOTS = 2  # 0.5 s hop, so k = length / hop = 4
K = WINDOW_SLOTS // HOP_SLOTS
SLOT_S = 1.0 / SPEC.fps


def random_text(rng: np.random.Generator) -> str:
    alphabet = list("abcdefghij klmnop0123456789") + ["é", "ß", "数", "🙂"]
    return "".join(rng.choice(alphabet, size=int(rng.integers(0, 120))))


@dataclass
class Stream:
    session: Hashable
    rng: np.random.Generator
    frames: dict[int, np.ndarray | None] = field(default_factory=dict)
    segments: dict[int, np.ndarray | None] = field(default_factory=dict)
    texts: list[tuple[Hashable, str, float]] = field(default_factory=list)  # absolute times
    text_upto: int = 0  # slots for which text events exist

    def frame(self, g: int) -> np.ndarray | None:
        if g not in self.frames:
            keep = self.rng.random() > 0.25
            img = self.rng.integers(0, 256, (SPEC.image_size, SPEC.image_size, 3), np.uint8)
            self.frames[g] = img if keep else None
        return self.frames[g]

    def segment(self, g: int) -> np.ndarray | None:
        if g not in self.segments:
            keep = self.rng.random() > 0.25
            wave = self.rng.standard_normal(SPEC.segment_samples).astype(np.float32) * 0.1
            self.segments[g] = wave if keep else None
        return self.segments[g]

    def grow_text(self, upto: int) -> None:
        while self.text_upto < upto:
            g = self.text_upto
            burst = 40 <= g < 48  # a burst of > max_text_events events per window
            for _ in range(int(self.rng.poisson(3.0 if burst else 0.5))):
                t = (g + float(self.rng.random())) * SLOT_S
                self.texts.append((("t", len(self.texts)), random_text(self.rng), t))
            self.text_upto += 1

    def window(self, w: int, missing: frozenset[str] = frozenset()) -> WindowInputs:
        first = w * HOP_SLOTS
        slots = range(first, first + WINDOW_SLOTS)
        self.grow_text(first + WINDOW_SLOTS)
        start, end = first * SLOT_S, (first + WINDOW_SLOTS) * SLOT_S
        video = [None if (f := self.frame(g)) is None else (("v", g), f) for g in slots]
        audio = [None if (a := self.segment(g)) is None else (("a", g), a) for g in slots]
        text = [(k, s, t - start) for k, s, t in self.texts if start <= t < end]
        return WindowInputs(
            self.session,
            [None] * WINDOW_SLOTS if "video" in missing else video,
            [None] * WINDOW_SLOTS if "audio" in missing else audio,
            [] if "text" in missing else text,
        )


def missing_modalities(rng: np.random.Generator, w: int) -> frozenset[str]:
    """Whole modalities missing in some windows, never two windows running."""
    if w % 5 != 3:
        return frozenset()
    pick = rng.choice(["video", "audio", "text", "all"])
    return frozenset({"video", "audio", "text"} if pick == "all" else {str(pick)})


# -- tokenizer and features ------------------------------------------------------------------


def test_tokenizer_bytes_plus_one_truncated() -> None:
    assert encode("ab", 10) == [98, 99]
    assert encode("é", 1) == [0xC3 + 1]  # truncated inside the character: bytes, not chars
    assert encode("", 5) == []
    ids, lengths = batch_encode(["abc", "", "é"], max_bytes=256)
    assert ids.dtype == torch.int64 and ids.shape == (3, 3)
    assert lengths.tolist() == [3, 0, 2]
    assert ids[1].tolist() == [0, 0, 0] and ids[2].tolist() == [0xC3 + 1, 0xA9 + 1, 0]
    assert batch_encode([])[0].shape == (0, 1)


def test_log_mel_shapes_and_filterbank() -> None:
    fb = mel_filterbank(201, 40, 16_000)
    assert fb.shape == (201, 40) and bool((fb >= 0).all()) and bool((fb.sum(0) > 0).all())
    mel = LogMel()(torch.randn(3, 4000))
    assert mel.shape == (3, 40, 26) and mel.dtype == torch.float32
    silent = LogMel()(torch.zeros(1, 4000))
    assert torch.allclose(silent, torch.full_like(silent, float(np.log(1e-6))))


# -- encoders and fusion ---------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_encoder_shapes_and_batch_independence(device: str) -> None:
    model, d, tol = make_model(device), SPEC.d_model, TOL[device]
    frames = torch.randint(0, 256, (5, 64, 64, 3), dtype=torch.uint8, device=device)
    wave = torch.randn(4, SPEC.segment_samples, device=device)
    ids, lengths = batch_encode(["one", "two three four", "", "数字 🙂"])
    with torch.inference_mode():
        v, a = model.encode_video(frames), model.encode_audio(wave)
        t = model.encode_text(ids.to(device), lengths)
        assert v.shape == (5, d) and a.shape == (4, d) and t.shape == (4, d)
        assert model.encode_video(frames[:0]).shape == (0, d)
        assert model.encode_video(frames[:, :48, :40]).shape == (5, d)  # any image size
        # an item's embedding does not depend on its batch (no batch statistics, packing)
        assert (model.encode_video(frames[2:3]) - v[2:3]).abs().max() < tol
        assert (model.encode_audio(wave[1:2]) - a[1:2]).abs().max() < tol
        alone = model.encode_text(ids[:1, :3].to(device), lengths[:1])
        assert (alone - t[:1]).abs().max() < tol


def test_recent_text_mask_keeps_the_latest() -> None:
    mask = torch.tensor([[True, True, False, True, True]])
    pos = torch.tensor([[0.1, 1.5, 9.0, 1.5, 0.7]])
    assert recent_text_mask(mask, pos, 2).tolist() == [[False, True, False, True, False]]
    assert recent_text_mask(mask, pos, 1).tolist() == [[False, False, False, True, False]]
    assert recent_text_mask(mask, pos, 5).tolist() == mask.tolist()


def fuse_inputs(b: int, tt: int, device: str, seed: int = 0) -> Encoded:
    """``FusionModel.fuse``'s input for ``b`` windows of 8 video and 8 audio slots
    and ``tt`` text slots, about 70 % present; the first window has nothing present."""
    g = torch.Generator().manual_seed(seed)
    d, tv, ta = SPEC.d_model, 8, 8
    present = [torch.rand(b, t, generator=g) > 0.3 for t in (tv, ta, tt)]
    for m in present:
        m[0] = False  # a window with nothing present: CLS alone
    args = (
        torch.randn(b, tv, d, generator=g), present[0],
        torch.randn(b, ta, d, generator=g), present[1],
        torch.randn(b, tt, d, generator=g), present[2],
        2 * torch.rand(b, tt, generator=g),
    )  # fmt: skip
    return Encoded(*(a.to(device) for a in args))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_eval_fuse_reads_cls_as_the_transformer_does(device: str, layers: int) -> None:
    torch.manual_seed(layers)
    model, d, tol = (
        FusionModel(SPEC, dropout=0.0, layers=layers).to(device),
        SPEC.d_model,
        TOL[device],
    )
    b, tv, ta, tt = 5, 8, 8, 3
    args = fuse_inputs(b, tt, device, seed=layers)
    present = [args.video_mask, args.audio_mask, args.text_mask]
    with torch.no_grad():
        want = model.train().fuse(args)  # nn.TransformerEncoder over every token
        got = model.eval().fuse(args)  # models.readout.cls_readout
        tokens = torch.randn(b, 1 + tv + ta + tt, d, device=device)
        mask = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=device), *present], dim=1)
        fast = model.fusion(tokens, src_key_padding_mask=~mask)[:, 0]  # its eval fast path
        assert (cls_readout(model.fusion, tokens, mask) - fast).abs().max() < tol
    assert got.shape == (b, len(SPEC.labels)) and bool(torch.isfinite(got).all())
    assert (got - want).abs().max() < tol


def test_cls_readout_applies_the_encoders_final_norm() -> None:
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, norm_first=True)
    norm = torch.nn.LayerNorm(16)
    encoder = torch.nn.TransformerEncoder(layer, 2, norm=norm, enable_nested_tensor=False).eval()
    with torch.no_grad():
        torch.nn.init.normal_(norm.weight)  # not the identity, so leaving it out would show
        tokens, present = torch.randn(3, 5, 16), torch.rand(3, 5) > 0.4
        present[:, 0] = True
        want = encoder(tokens, src_key_padding_mask=~present)[:, 0]
        assert (cls_readout(encoder, tokens, present) - want).abs().max() < 1e-5


def test_cls_readout_refuses_post_norm_layers() -> None:
    layer = torch.nn.TransformerEncoderLayer(8, 2, 16, batch_first=True, norm_first=False)
    encoder = torch.nn.TransformerEncoder(layer, 1, enable_nested_tensor=False).eval()
    with pytest.raises(ValueError, match="pre-norm"):
        cls_readout(encoder, torch.randn(1, 3, 8), torch.ones(1, 3, dtype=torch.bool))


def test_forward_trains() -> None:
    torch.manual_seed(0)
    model = FusionModel(SPEC, dropout=0.1).train()
    rng = np.random.default_rng(0)
    windows = [Stream(i, rng).window(i) for i in range(3)]
    logits = model(collate(windows, SPEC))
    assert logits.shape == (3, len(SPEC.labels))
    torch.autograd.backward(torch.nn.functional.cross_entropy(logits, torch.tensor([1, 2, 3])))
    for enc in (model.video_encoder, model.audio_encoder, model.text_encoder):
        assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in enc.parameters())


# -- incremental inference -------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_incremental_equals_full_recompute_at_one_kth_the_work(device: str) -> None:
    model, rng = make_model(device), np.random.default_rng(1)
    streams = [Stream(name, rng) for name in ("a", "b", "c")]
    inc = IncrementalFusion(model, device)
    full_count = dict.fromkeys(inc.encoded, 0)
    referenced: dict[str, set[tuple[Hashable, Hashable]]] = {m: set() for m in inc.encoded}
    next_w = [0, 0, 0]
    worst = 0.0
    steps = 32
    for step in range(steps):
        windows = []
        for i, s in enumerate(streams):
            # stream c lags and catches up: two of its windows in one call, every other step
            n = (2 if step % 2 else 0) if s.session == "c" else 1
            for _ in range(n):
                windows.append(s.window(next_w[i], missing_modalities(rng, next_w[i])))
                next_w[i] += 1
        got = inc(windows)
        want = full_probs(model, windows, device)
        assert got.shape == want.shape == (len(windows), len(SPEC.labels))
        worst = max(worst, float((got - want).abs().max()))
        for w in windows:
            full_count["video"] += sum(v is not None for v in w.video)
            full_count["audio"] += sum(a is not None for a in w.audio)
            full_count["text"] += min(len(w.text), SPEC.max_text_events)
            referenced["video"] |= {(w.session, v[0]) for v in w.video if v is not None}
            referenced["audio"] |= {(w.session, a[0]) for a in w.audio if a is not None}
            referenced["text"] |= {(w.session, t[0]) for t in w.text}
    assert sum(next_w) >= 90
    assert worst <= TOL[device], worst
    # each item is encoded once: about 1/k of a full recompute, plus each stream's first
    # window (windows with a whole modality missing lower the full count, hence the 1.2)
    for m in ("video", "audio"):
        assert inc.encoded[m] == len(referenced[m]), m
        assert inc.encoded[m] <= 1.2 * full_count[m] / K + len(streams) * WINDOW_SLOTS, m
        assert inc.encoded[m] < 0.35 * full_count[m], m
    assert inc.encoded["text"] <= len(referenced["text"])
    assert inc.encoded["text"] < 0.5 * full_count["text"]


AMP = [
    ("cpu", "bf16"),
    pytest.param("cuda", "fp16", marks=_gpu()),
    pytest.param(
        "cuda",
        "bf16",
        marks=_gpu(
            pytest.mark.skipif(
                not (torch.cuda.is_available() and torch.cuda.is_bf16_supported()),
                reason="no bf16 on this CUDA device",
            )
        ),
    ),
]


@pytest.mark.parametrize(("device", "precision"), AMP)
def test_mixed_precision_stays_close_to_float32(device: str, precision: str) -> None:
    """Autocast (and, on CUDA, pinned non-blocking copies) on the trained model: float32
    probabilities on the CPU, within 0.05 of plain float32 and nearly always the same label."""
    model, _ = load_checkpoint(default_checkpoint_dir(), device=device)
    rng = np.random.default_rng(3)
    streams = [Stream(name, rng) for name in ("a", "b")]
    fp32 = IncrementalFusion(model, device)
    amp = IncrementalFusion(model, device, precision=precision)
    worst, same, n = 0.0, 0, 0
    for w in range(12):
        windows = [s.window(w, missing_modalities(rng, w)) for s in streams]
        want, got = fp32(windows), amp(windows)
        assert got.dtype == torch.float32 and got.device.type == "cpu"
        assert torch.allclose(got.sum(-1), torch.ones(len(windows)), atol=1e-5)
        worst = max(worst, float((got - want).abs().max()))
        same += int((got.argmax(1) == want.argmax(1)).sum())
        n += len(windows)
    assert worst <= 0.05, worst
    assert same >= 0.9 * n, (same, n)
    assert amp.encoded == fp32.encoded  # the cache works the same at any precision


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="precision"):
        IncrementalFusion(make_model(), precision="int8")


@pytest.mark.parametrize("device", DEVICES)
def test_all_missing_window_gives_finite_probabilities(device: str) -> None:
    model = make_model(device)
    inc = IncrementalFusion(model, device)
    empty = WindowInputs("s", [None] * 8, [None] * 8, [])
    nothing = WindowInputs("t", [], [], [])
    probs = inc([empty, nothing])
    assert probs.shape == (2, 10) and bool(torch.isfinite(probs).all())
    assert torch.allclose(probs.sum(-1), torch.ones(2))
    assert bool(torch.isfinite(full_probs(model, [empty], device)).all())
    assert inc([]).shape == (0, 10)
    assert sum(inc.encoded.values()) == 0


def test_mixed_window_lengths_and_far_text_offsets() -> None:
    model, rng = make_model(), np.random.default_rng(2)
    short, long = Stream("short", rng), Stream("long", rng)
    w_short = short.window(0)
    w_short = WindowInputs("short", w_short.video[:4], w_short.audio[:4], w_short.text[:2])
    w_long = long.window(3)
    w_long = WindowInputs(  # 3 s, and a text offset beyond max_positions (clipped)
        "long",
        [*w_long.video, *w_long.video[:4]],
        [*w_long.audio, *w_long.audio[:4]],
        [*w_long.text, (("far", 0), "late", 500.0), (("neg", 0), "early", -1.0)],
    )
    windows = [w_short, w_long]
    got = IncrementalFusion(model)(windows)
    assert float((got - full_probs(model, windows, "cpu")).abs().max()) <= 1e-4


def test_cache_stays_bounded_over_many_windows() -> None:
    model, rng = make_model(), np.random.default_rng(3)
    stream, other = Stream("s", rng), Stream("o", rng)
    inc = IncrementalFusion(model)
    bound = 3 * (WINDOW_SLOTS + 2 * HOP_SLOTS) + 3 * SPEC.max_text_events
    peak = 0
    for w in range(500):
        inc([stream.window(w, missing_modalities(rng, w)), other.window(w)])
        peak = max(peak, inc.cache_size("s"))
        if w % 50 == 0:  # streams never revisit old items; forget them as we go
            stream.frames = {g: f for g, f in stream.frames.items() if g >= w * HOP_SLOTS}
    assert peak <= bound, peak
    assert inc.session_count == 2
    inc.evict("s", lambda key: isinstance(key, tuple) and key[0] == "v")
    assert 0 < inc.cache_size("s") <= WINDOW_SLOTS + 2 * HOP_SLOTS
    inc.drop_session("s")
    assert inc.cache_size("s") == 0 and inc.session_count == 1


def test_max_entries_and_max_sessions_bound_the_cache_and_stay_correct() -> None:
    model, rng = make_model(), np.random.default_rng(4)
    inc = IncrementalFusion(model, max_entries=5, max_sessions=2)
    streams = [Stream(i, rng) for i in range(3)]
    for w in range(6):
        windows = [s.window(w) for s in streams]
        got = inc(windows)
        assert float((got - full_probs(model, windows, "cpu")).abs().max()) <= 1e-4
        assert all(inc.cache_size(s.session) <= 5 for s in streams)
        assert inc.session_count <= 2


# -- checkpoints -----------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_checkpoint_roundtrip_is_exact(tmp_path: Path, device: str) -> None:
    model = make_model("cpu", seed=7)
    info = save_checkpoint(model, tmp_path / "ck", metrics={"acc": 0.5}, extra={"data": "x"})
    loaded, got = load_checkpoint(tmp_path / "ck", device=device)
    assert got.version == info.version and got.version.startswith("sha256:")
    assert got.spec == SPEC and got.name == SPEC.name and got.trained is False
    assert got.config["metrics"] == {"acc": 0.5} and got.config["data"] == "x"
    assert not loaded.training
    windows = [Stream("s", np.random.default_rng(5)).window(0)]
    want = full_probs(model.to(device), windows, device)
    assert torch.equal(full_probs(loaded, windows, device), want)


def test_shipped_reference_checkpoint_loads() -> None:
    root = default_checkpoint_dir()
    assert root == Path(__file__).resolve().parent.parent / "models" / "reference"
    assert (root / "model.safetensors").stat().st_size < 5_000_000
    model, info = load_checkpoint(root)
    assert info.trained is True and info.spec == SPEC
    assert sum(p.numel() for p in model.parameters()) <= 1_000_000


def _rewrite(directory: Path, weights: dict[str, torch.Tensor] | bytes) -> None:
    """Replace the weights and fix the version, so only the weights themselves are wrong."""
    path = directory / "model.safetensors"
    if isinstance(weights, bytes):
        path.write_bytes(weights)
    else:
        save_file(weights, str(path))
    import hashlib

    config = json.loads((directory / "config.json").read_text())
    config["version"] = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    (directory / "config.json").write_text(json.dumps(config))


def test_load_rejects_bad_checkpoints(tmp_path: Path) -> None:
    model = make_model()
    good = {k: v.contiguous() for k, v in model.state_dict().items()}

    def fresh(name: str) -> Path:
        save_checkpoint(model, tmp_path / name)
        return tmp_path / name

    def rejects(directory: Path, match: str) -> None:
        with pytest.raises(CheckpointFormatError, match=match) as err:
            load_checkpoint(directory)
        assert "\n" not in str(err.value)

    rejects(tmp_path / "nowhere", "not found")
    (d := fresh("no_weights")).joinpath("model.safetensors").unlink()
    rejects(d, "no model.safetensors")
    (d := fresh("no_config")).joinpath("config.json").unlink()
    rejects(d, "no config.json")
    (d := fresh("bad_json")).joinpath("config.json").write_text("{nope")
    rejects(d, "not valid JSON")
    d = fresh("format")
    config = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**config, "format": "other/9"}))
    rejects(d, "unknown format")
    d = fresh("tampered")
    (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:-4] + b"abcd")
    rejects(d, "does not match")
    _rewrite(d := fresh("truncated"), (d / "model.safetensors").read_bytes()[:5000])
    rejects(d, "not a readable safetensors")
    _rewrite(d := fresh("missing"), {k: v for k, v in good.items() if k != "head.bias"})
    rejects(d, "missing tensors")
    _rewrite(d := fresh("shape"), {**good, "head.weight": torch.zeros(11, SPEC.d_model)})
    rejects(d, "tensor head.weight")


class _Payload:
    """Unpickling this would create a file: proof that nothing unpickles a checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))  # opening for writing creates the file


def test_checkpoints_load_only_from_safetensors_never_pickle(tmp_path: Path) -> None:
    import hashlib
    import json
    import pickle

    from models.checkpoint import CheckpointFormatError, default_checkpoint_dir, load_checkpoint

    marker = tmp_path / "pwned"
    ck = tmp_path / "ck"
    ck.mkdir()
    blob = pickle.dumps({"weights": _Payload(marker)})
    (ck / "model.safetensors").write_bytes(blob)  # a pickle under the expected name
    (ck / "model.pt").write_bytes(blob)  # and where torch.load would look
    config = json.loads((default_checkpoint_dir() / "config.json").read_text())
    config["version"] = "sha256:" + hashlib.sha256(blob).hexdigest()
    (ck / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointFormatError, match="not a readable safetensors file"):
        load_checkpoint(ck)
    assert not marker.exists()
