"""AV-objects generator: reproducible bytes, K per class, held-out pictures and voices, the
clip format read back by training, one-line errors."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import IN_CI, require_tool

from streamer.cli import main
from streamer.config import WindowConfig
from streamer.datasets.avobjects import CLASSES, NAMES, generate, pictures
from streamer.datasets.avobjects.plan import DEFAULT, name_of, plan_segment, render_frame
from streamer.errors import ConfigError
from streamer.training.clipset import load_split
from streamer.training.commands import spec_for

SEED = 3
N = len(CLASSES)


def require_pictures() -> None:
    """The emoji font and scikit-image/Pillow: a skip outside CI, a failure in CI."""
    try:
        pictures.font_path()
        import PIL  # noqa: F401
        import skimage  # noqa: F401
    except (pictures.EmojiFontMissing, ImportError) as e:
        msg = f"AV-objects pictures unavailable: {e}"
        if IN_CI:
            pytest.fail(f"{msg} (CI must install fonts-noto-color-emoji and streamer[avobjects])")
        pytest.skip(f"{msg} (outside CI, so skipped)")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tool("espeak-ng")
    require_pictures()
    out = tmp_path_factory.mktemp("avo") / "a"
    generate(out, clips=1, per_class=2, seed=SEED, workers=2)
    return out


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".cache" not in p.parts}  # fmt: skip


def rows(split_dir: Path) -> list[dict[str, str]]:
    with (split_dir / "labels.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_same_args_same_bytes_and_a_smaller_k_is_a_prefix(data: Path, tmp_path: Path) -> None:
    small = tmp_path / "k1"
    generate(small, clips=1, per_class=1, seed=SEED, workers=1)  # no pool: same bytes
    a, b = files(data), files(small)
    assert len([n for n in a if n.endswith(".mp4")]) == 3 * N
    for name, content in b.items():
        if name in ("meta.json", "train/labels.csv"):
            continue
        assert a[name] == content, f"{name} differs: K=1's clips must be K=2's first clips"
    assert rows(small / "train") == rows(data / "train")[:N]
    other = plan_segment(SEED + 1, "train", 0)
    assert other != plan_segment(SEED, "train", 0)
    frame = render_frame(plan_segment(SEED, "train", 5), 12, DEFAULT)
    assert np.array_equal(frame, render_frame(plan_segment(SEED, "train", 5), 12, DEFAULT))


def test_per_class_counts_and_a_fixed_test_set(data: Path) -> None:
    train, test = rows(data / "train"), rows(data / "test")
    assert Counter(r["label"] for r in train) == {n: 2 for n in NAMES}
    assert Counter(r["label"] for r in test) == {n: 1 for n in NAMES}
    assert all((r["start"], r["end"]) == ("0.000", "3.000") for r in train + test)
    meta = json.loads((data / "meta.json").read_text())
    assert meta["format"] == "avobjects/1" and meta["classes"] == list(NAMES)
    assert meta["splits"]["train"]["label_counts"] == {n: 2 for n in NAMES}


def test_test_pictures_and_voices_are_held_out(data: Path) -> None:
    train, test = set(pictures.pool("train")), set(pictures.pool("test"))
    for c in range(N):
        tr, te = set(pictures.pool("train")[c]), set(pictures.pool("test")[c])
        assert len(tr) >= 2 and len(te) >= 1 and not tr & te, NAMES[c]
    assert train and test
    meta = json.loads((data / "meta.json").read_text())["splits"]
    assert not set(meta["train"]["picture_pool"]) & set(meta["test"]["picture_pool"])
    assert set(meta["test"]["pictures_used"]) <= set(meta["test"]["picture_pool"])
    assert not set(meta["train"]["voice_pool"]) & set(meta["test"]["voice_pool"])
    assert set(meta["test"]["voices_used"]) <= set(meta["test"]["voice_pool"])
    for i in range(3 * N):
        p = plan_segment(SEED, "test", i)
        if p.video.image is not None:
            assert p.video.image in pictures.pool("test")[p.video.shown or 0]


def test_every_picture_renders_and_differs() -> None:
    require_pictures()
    sprites = pictures.sprites()
    assert len(sprites) == len(pictures.catalogue()) >= 3 * N
    for s, p in zip(sprites, pictures.catalogue(), strict=True):
        assert s.shape == (pictures.SIDE, pictures.SIDE, 4), p.source
        assert (s[..., 3] > 0.5).mean() > 0.2, f"{p.source} is (nearly) blank"
        assert s[..., :3].std() > 10, f"{p.source} has no detail"
    flat = np.stack([s.reshape(-1) for s in sprites])
    dist = np.abs(flat[:, None] - flat[None]).mean(-1) + np.eye(len(flat)) * 1e9
    assert dist.min() > 1.0, "two pictures render the same"


def test_modalities_fail_independently() -> None:
    plans = [plan_segment(SEED, "train", i) for i in range(400)]
    video = np.array([p.video.image is None for p in plans])
    audio = np.array([p.audio.key is None for p in plans])
    text = np.array([p.text.mentions is None for p in plans])
    assert 0.05 < video.mean() < 0.3 and 0.05 < audio.mean() < 0.3 and 0.1 < text.mean() < 0.4
    assert (video & audio & text).mean() < 0.05  # all three gone together: rare
    said = [p for p in plans if p.audio.key is not None and p.audio.spoken == p.label]
    assert all(p.audio.key is not None and p.audio.key.word == name_of(p) for p in said)
    named = [p for p in plans if p.text.mentions == p.label]
    synonyms = {c.name: (c.name, *c.synonyms) for c in CLASSES}
    hit = sum(any(w in " ".join(t for _, t in p.text.events) for w in synonyms[name_of(p)])
              for p in named)  # fmt: skip
    assert hit > 0.6 * len(named)  # typos spoil a few


def test_the_folder_reads_back_as_labelled_windows(data: Path) -> None:
    spec = spec_for(data / "train")
    assert spec.name == "custom-events" and spec.labels == tuple(sorted(NAMES))
    ws = load_split(data / "test", spec, WindowConfig())
    assert len(ws) >= N and set(ws.labels.tolist()) == set(range(N))
    assert ws.frames.shape[0] > 0 and len(ws.texts) > 0


def test_bad_arguments_exit_2_in_one_line(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    for argv in (["--clips", "0"], ["--per-class", "-1"], ["--seed", "x"]):
        with pytest.raises(SystemExit) as e:
            main(["dataset", "avobjects", str(tmp_path / "o"), *argv])
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err and "error:" in err[-1], argv
    file = tmp_path / "f"
    file.write_text("x")
    assert main(["dataset", "avobjects", str(file), "--clips", "1"]) == 2
    assert "not a folder" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="per_class"):
        generate(tmp_path / "g", clips=1, per_class=0, seed=0)
