"""The silero-vad audio encoder (the ``[pretrained]`` extra): espeak-ng speech is tagged
``speech``, silence and noise are not; frozen, not saved, checked at load, not exportable."""

from __future__ import annotations

import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require_tool
from test_pretrained_encoders import require_modules

from models.checkpoint import CheckpointFormatError, load_checkpoint, save_checkpoint
from models.encoders.frozen import FrozenEncoder
from models.encoders.speech import SPEECH, VAD_DIM, chunk_starts, silero_vad
from models.fusion import FusionModel
from models.incremental import IncrementalFusion
from models.spec import ModelSpec
from models.tags import Tag
from models.windows import WindowInputs

SPEC = ModelSpec()
NAME = "silero-vad"
SENTENCE = "seven three one, open the door please, hello there, how are you"


@pytest.fixture(autouse=True)
def _extra() -> None:
    require_modules("silero_vad", "onnxruntime")


@pytest.fixture(scope="module")
def voice(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, int]:
    """An espeak-ng sentence (float32, its own rate: 22,050 Hz)."""
    path = tmp_path_factory.mktemp("espeak") / "speech.wav"
    subprocess.run([require_tool("espeak-ng"), "-v", "en", "-w", str(path), SENTENCE],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    with wave.open(str(path)) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768.0, rate


def segments(x: np.ndarray, n: int) -> np.ndarray:
    return x[: len(x) // n * n].reshape(-1, n)


def voiced(segs: np.ndarray) -> np.ndarray:
    """Segments with voice in each of their quarters (not a pause between words)."""
    q = segs[:, : segs.shape[1] // 4 * 4].reshape(len(segs), 4, -1)
    return np.sqrt((q**2).mean(axis=2)).min(axis=1) > 0.02


def to_16k(x: np.ndarray, rate: int) -> np.ndarray:
    t = np.arange(round(len(x) * 16_000 / rate)) / 16_000
    return np.interp(t, np.arange(len(x)) / rate, x).astype(np.float32)


def test_chunks_cover_the_segment_without_padding() -> None:
    assert chunk_starts(4000) == [0, 512, 1024, 1536, 2048, 2560, 3072, 3488]
    assert chunk_starts(1024) == [0, 512]
    assert chunk_starts(300) == [0]


def test_speech_is_tagged_and_silence_and_noise_are_not(voice: tuple[np.ndarray, int]) -> None:
    x, rate = voice
    vad, prov = silero_vad(rate)  # the clip's own rate: the backbone resamples to 16 kHz
    assert (prov.package, prov.licence, prov.file) == (
        NAME,
        "MIT",
        "silero_vad/data/silero_vad.onnx",
    )
    segs = segments(x, round(SPEC.audio_segment * rate))
    tags = vad.tags(vad(torch.from_numpy(segs)))  # the tags read the backbone's features
    scores = np.array([t[0][1] for t in tags])
    assert {t[0][0] for t in tags} == {"speech"}
    held = voiced(segs)
    assert held.sum() >= 8, held  # the sentence is ~4 s: most segments hold the voice
    assert (scores[held] >= 0.5).all(), scores
    rng = np.random.default_rng(0)
    n = segs.shape[1]
    quiet = [np.zeros((2, n)), rng.standard_normal((20, n)) * 0.003,
             rng.standard_normal((20, n)) * 0.3]  # fmt: skip
    for q in quiet:
        got = [t[0][1] for t in vad.tags(vad(torch.from_numpy(q.astype(np.float32))))]
        assert max(got) < 0.1, got


def test_the_embedding_is_frozen_deterministic_and_per_item() -> None:
    model = FusionModel(SPEC, encoders={"audio": NAME}).eval()
    enc = model.encoder("audio")
    assert isinstance(enc, FrozenEncoder) and enc.dim == VAD_DIM == SPEECH[0].dim
    assert {k for k in model.state_dict() if k.startswith("audio_encoder.")} == {
        "audio_encoder.proj.0.weight", "audio_encoder.proj.0.bias",
        "audio_encoder.proj.1.weight", "audio_encoder.proj.1.bias",
    }  # fmt: skip
    g = torch.Generator().manual_seed(1)
    waves = torch.randn(3, SPEC.segment_samples, generator=g) * 0.1
    feats = enc.features(waves)
    assert feats.shape == (3, VAD_DIM) and feats.dtype == torch.float32
    assert torch.equal(enc.features(waves), feats)
    torch.testing.assert_close(enc.features(waves[1:2])[0], feats[1], atol=1e-5, rtol=1e-5)
    assert enc(waves).shape == (3, SPEC.d_model)
    assert not torch.equal(feats[0], feats[1])


def test_a_checkpoint_stays_small_and_reloads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = FusionModel(SPEC, encoders={"audio": NAME}).eval()
    save_checkpoint(model, tmp_path / "ckpt")
    size = sum(p.stat().st_size for p in (tmp_path / "ckpt").iterdir())
    assert size < 5_000_000, size
    loaded, _ = load_checkpoint(tmp_path / "ckpt")
    assert loaded.encoder("audio").provenance == model.encoder("audio").provenance
    waves = torch.randn(4, SPEC.segment_samples, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        assert torch.equal(loaded.encode_audio(waves), model.encode_audio(waves))


def window(session: str, segs: np.ndarray) -> WindowInputs:
    return WindowInputs(session, [], [((session, i), s) for i, s in enumerate(segs)], [])


def test_the_runtime_tags_a_window_with_speech_and_not_a_silent_one(
    voice: tuple[np.ndarray, int],
) -> None:
    x, rate = voice
    speech = segments(to_16k(x, rate), SPEC.segment_samples)[:8]
    silence = np.zeros_like(speech)
    inc = IncrementalFusion(FusionModel(SPEC, encoders={"audio": NAME}).eval())
    probs, tags = inc.infer([window("a", speech), window("b", silence)])
    assert probs.shape == (2, len(SPEC.labels)) and tags is not None
    (tag,) = tags[0]
    assert isinstance(tag, Tag) and (tag.tag, tag.modality) == ("speech", "audio")
    assert tag.score >= 0.9, tag
    assert tags[1] == ()
    _, again = inc.infer([window("a", speech)])  # cached: the tags come from the cache
    assert again == [tags[0]] and inc.encoded["audio"] == 16


def test_a_torchscript_export_refuses_it_in_one_line(tmp_path: Path) -> None:
    from models.export import ExportError, export_model

    model = FusionModel(SPEC, encoders={"audio": NAME}).eval()
    with pytest.raises(ExportError, match="silero-vad.* runs outside torch") as e:
        export_model(model, "torchscript", tmp_path / "ts")
    assert "\n" not in str(e.value)


def test_a_missing_package_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_checkpoint(FusionModel(SPEC, encoders={"audio": NAME}), tmp_path / "ckpt")
    monkeypatch.setitem(sys.modules, "silero_vad", None)
    with pytest.raises(CheckpointFormatError) as e:
        load_checkpoint(tmp_path / "ckpt")
    msg = str(e.value)
    assert "\n" not in msg and "'silero-vad'" in msg
    assert "pip install 'streamer[pretrained]'" in msg
