"""AV-digits generator: reproducible bytes, disjoint splits, the clip format, live = clips."""

from __future__ import annotations

import asyncio
import csv
import json
import re
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest
from conftest import require_tool

from models.spec import ModelSpec
from streamer.datasets.avdigits import generate, live, speech
from streamer.datasets.avdigits.cli import main_dataset
from streamer.datasets.avdigits.images import pool
from streamer.datasets.avdigits.plan import plan_segment
from streamer.datasets.avdigits.settings import DEFAULT, NS
from streamer.errors import ConfigError, SourceOpenError, StreamerError
from streamer.frames import AudioChunk, VideoFrame
from streamer.sources.convert import rgb_to_frame, video_to_rgb
from streamer.sources.synthetic import SyntheticSource, avdigits_label, avdigits_text
from streamer.testing import FakeClock

SEED = 5
CLIPS = 4  # 3 train + 1 test
CLIP_S = 12.0
RATE = DEFAULT.layout.audio_rate


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tool("espeak-ng")
    out = tmp_path_factory.mktemp("avd") / "a"
    generate(out, clips=CLIPS, seed=SEED, workers=2)
    return out


def files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_seed_same_bytes_different_seed_differs(data: Path, tmp_path: Path) -> None:
    again = tmp_path / "b"
    generate(again, clips=CLIPS, seed=SEED, workers=1)  # no pool: same bytes either way
    a, b = files(data), files(again)
    assert sorted(a) == sorted(b)
    assert {"meta.json", "train/labels.csv", "test/labels.csv", "train/clip_0003.mp4",
            "test/clip_0001.jsonl"} <= set(a)  # fmt: skip
    for name in a:
        assert a[name] == b[name], f"{name} differs between two runs with the same seed"
    other = tmp_path / "c"
    generate(other, clips=2, seed=SEED + 1, workers=1)
    c = files(other)
    assert c["train/clip_0001.mp4"] != a["train/clip_0001.mp4"]
    assert c["test/clip_0001.mp4"] != a["test/clip_0001.mp4"]


def test_train_and_test_are_disjoint(data: Path) -> None:
    meta = json.loads((data / "meta.json").read_text())
    train, test = meta["splits"]["train"], meta["splits"]["test"]
    assert not set(train["voice_pool"]) & set(test["voice_pool"])
    assert len(test["voice_pool"]) >= 2
    assert not set(train["image_pool"]) & set(test["image_pool"])
    for split in (train, test):
        assert set(split["voices_used"]) <= set(split["voice_pool"])
        assert set(split["images_used"]) <= set(split["image_pool"])
    # over many segments, not only the few written above
    for split, voices in (("train", speech.TRAIN_VOICES), ("test", speech.TEST_VOICES)):
        imgs = {i for d in pool(split) for i in d}
        for i in range(300):
            p = plan_segment(SEED, split, i)
            assert p.video.image is None or p.video.image in imgs
            assert p.audio.key is None or p.audio.key.voice in voices


def read_labels(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert path.read_text().splitlines()[0] == "clip,start,end,label"
    return rows


def test_labels_csv_covers_each_clip(data: Path) -> None:
    for split, n in (("train", 3), ("test", 1)):
        rows = read_labels(data / split / "labels.csv")
        assert len(rows) == n * 4
        for k in range(n):
            mine = [r for r in rows if r["clip"] == f"clip_{k + 1:04d}"]
            assert [(float(r["start"]), float(r["end"])) for r in mine] == [
                (0.0, 3.0), (3.0, 6.0), (6.0, 9.0), (9.0, 12.0)
            ]  # fmt: skip
            labels = [r["label"] for r in mine]
            assert all(lab in "0123456789" and len(lab) == 1 for lab in labels)
            assert all(a != b for a, b in zip(labels, labels[1:], strict=False))


def test_mp4_has_both_tracks_and_the_expected_duration(data: Path) -> None:
    with av.open(str(data / "train" / "clip_0001.mp4")) as c:
        (vs,) = c.streams.video
        (aus,) = c.streams.audio
        assert vs.codec_context.name == "h264" and (vs.width, vs.height) == (128, 128)
        assert aus.codec_context.name == "aac" and aus.rate == RATE
        frames = [f for f in c.decode(video=0)]
    assert len(frames) == 120
    assert frames[-1].time == pytest.approx(11.9)
    with av.open(str(data / "train" / "clip_0001.mp4")) as c:
        samples = sum(f.samples for f in c.decode(audio=0))
    assert abs(samples / RATE - CLIP_S) < 0.1


NUMBER = {str(d): re.compile(rf"(?<!\d){d}(?!\d)|\b{w}\b") for d, w in enumerate(speech.WORDS)}


def test_text_events_sit_in_their_segments_and_mention_the_label(data: Path) -> None:
    for split in ("train", "test"):
        rows = read_labels(data / split / "labels.csv")
        for jsonl in (data / split).glob("*.jsonl"):
            events = [json.loads(line) for line in jsonl.read_text().splitlines()]
            assert [e["t"] for e in events] == sorted(e["t"] for e in events)
            mine = [r for r in rows if r["clip"] == jsonl.stem]
            for e in events:
                assert isinstance(e["text"], str) and e["text"]
                assert any(float(r["start"]) < e["t"] < float(r["end"]) for r in mine)
    # over many segments: the label is named far more often than any other digit
    hits = others = 0
    n = 400
    for i in range(n):
        p = plan_segment(SEED, "train", i)
        text = " ".join(t for _, t in p.text.events)
        hits += bool(NUMBER[str(p.label)].search(text))
        others += bool(NUMBER[str((p.label + 1 + i % 9) % 10)].search(text))
        assert all(0 < u < DEFAULT.layout.segment_s for u, _ in p.text.events)
    assert 0.45 < hits / n < 0.9  # informative, but not always
    assert others / n < 0.2


def test_label_at_is_deterministic_and_changes_per_segment() -> None:
    t0 = 3.0 * 588_053_334  # a segment start, epoch seconds (2025-11-26)
    labels = [live.label_at(SEED, t0 + 3.0 * k + 0.1) for k in range(40)]
    assert labels == [live.label_at(SEED, t0 + 3.0 * k + 2.9) for k in range(40)]
    assert labels == [avdigits_label(SEED, t0 + 3.0 * k + 1.5) for k in range(40)]
    assert all(a != b for a, b in zip(labels, labels[1:], strict=False))
    assert len(set(labels)) == 10
    assert labels != [live.label_at(SEED + 1, t0 + 3.0 * k + 0.1) for k in range(40)]


def blocks(img: npt.NDArray[np.uint8], n: int = 16) -> npt.NDArray[np.float64]:
    h, w, _ = img.shape
    return img.astype(np.float64).reshape(n, h // n, n, w // n, 3).mean(axis=(1, 3))


def test_live_content_equals_the_test_clips(data: Path) -> None:
    mp4 = data / "test" / "clip_0001.mp4"  # test segments 0-3 = live time 0 .. 12 s
    with av.open(str(mp4)) as c:
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    errors, wrong = [], []
    for i in (5, 35, 64, 100):
        ref = live.frame_at(SEED, i * NS // 10)
        errors.append(np.abs(blocks(decoded[i]) - blocks(ref)).mean())
        other = live.frame_at(SEED, (i + 31) * NS // 10)
        wrong.append(np.abs(blocks(decoded[i]) - blocks(other)).mean())
    assert max(errors) < 6 and min(wrong) > max(errors)
    with av.open(str(mp4)) as c:
        x = np.concatenate([f.to_ndarray()[0] for f in c.decode(audio=0)])[: 12 * RATE]
    ref = live.audio_samples(SEED, 0, len(x))
    assert np.sqrt(np.mean((x - ref) ** 2)) < 0.35 * np.sqrt(np.mean(ref**2))
    text = [
        json.loads(line) for line in (data / "test" / "clip_0001.jsonl").read_text().splitlines()
    ]
    assert [(e["t"], e["text"]) for e in text] == [
        (round(t, 3), s) for t, s in live.text_between(SEED, 0.0, CLIP_S)
    ]


async def test_live_source_serves_live_content_on_the_epoch_grid() -> None:
    spec = ModelSpec()
    clock = FakeClock()
    src = SyntheticSource(f"synthetic:avdigits?seed={SEED}", video=True, audio=True,
                          spec=spec, clock=clock)  # fmt: skip
    await src.open()
    clock.advance(0.5)
    async with asyncio.timeout(10):
        items = [await src.recv() for _ in range(25)]
    video = [i for i in items if isinstance(i, VideoFrame)]
    audio = [i for i in items if isinstance(i, AudioChunk)]
    assert video and audio
    for f in video:
        assert f.pts_ns % (NS // 10) == 0
        expect = video_to_rgb(rgb_to_frame(live.frame_at(SEED, f.pts_ns)), spec.image_size)
        assert f.image.shape == (64, 64, 3) and np.array_equal(f.image, expect)
    for a in audio:
        first = a.pts_ns * RATE // NS
        assert first * NS // RATE == a.pts_ns and a.rate == RATE
        assert np.array_equal(a.samples, live.audio_samples(SEED, first, len(a.samples)))
    joined = np.concatenate([a.samples for a in audio])
    assert len(joined) == 320 * len(audio)  # consecutive chunks, no gap


def test_live_source_url_errors() -> None:
    for url, problem in (
        ("synthetic:avdigits?size=64x64", "option 'size' does not apply to avdigits"),
        ("synthetic:avdigits?seed=-1", "seed must be a positive number"),
    ):
        with pytest.raises(SourceOpenError, match=re.escape(problem)):
            SyntheticSource(url, video=True, audio=True, spec=ModelSpec())


def test_avdigits_text_is_timed_and_deterministic() -> None:
    t0 = 1_764_160_000.0
    a = [e for e, _ in zip(avdigits_text(SEED, t0), range(30), strict=False)]
    assert a == [e for e, _ in zip(avdigits_text(SEED, t0), range(30), strict=False)]
    times = [t for t, _ in a]
    assert times == sorted(times) and times[0] >= t0
    for t, text in a:
        assert (t, text) in live.text_events(SEED, live.segment_index(t))


def test_cli_summary_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    require_tool("espeak-ng")
    assert main_dataset(str(tmp_path / "d"), 2, 1) == 0
    out = capsys.readouterr().out
    assert "train: 1 clips, 4 segments" in out and "test: 1 clips" in out
    with pytest.raises(ConfigError, match="clips"):
        main_dataset(str(tmp_path / "e"), 1, 0)
    with pytest.raises(ConfigError, match="seed"):
        main_dataset(str(tmp_path / "e"), 4, -1)
    monkeypatch.setattr(speech.shutil, "which", lambda name: None)
    with pytest.raises(StreamerError, match="espeak-ng is not installed") as e:
        main_dataset(str(tmp_path / "f"), 2, 0)
    assert isinstance(e.value, speech.EspeakMissing) and "\n" not in str(e.value)


def test_audio_at_another_rate_is_the_same_signal() -> None:
    first = 1_764_160_000 * RATE + 12_345
    native = live.audio_samples(SEED, first, 4_000)
    x48 = live.audio_at_rate(SEED, first * 3, 12_000, 48_000)
    assert x48.dtype == np.float32 and len(x48) == 12_000
    assert np.allclose(x48[::3], native, atol=1e-6)
