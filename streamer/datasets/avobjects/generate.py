"""Write an AV-objects data set in the generic clip format (AV-digits' layout).

    OUT/train/clip_0001.mp4    H.264 (10 fps, 128x128, yuv420p) + AAC (16 kHz mono), 3 s
    OUT/train/clip_0001.jsonl  {"t": seconds_from_clip_start, "text": "..."} per line
    OUT/train/labels.csv       clip,start,end,label  (one row: the clip's class name)
    OUT/test/...
    OUT/meta.json              settings, classes, pictures and voices per split

Each clip is one segment of one class. Train holds ``per_class`` clips of every class,
test ``clips`` of every class whatever ``per_class`` is; clip k (0-based) of a split is
segment k of that split, class ``k % classes``. Same arguments, same bytes: a file depends
only on (seed, split, segment), so worker processes change the speed, not the output.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamer.datasets.avdigits.settings import NS, SPLITS, Settings, Split
from streamer.datasets.avobjects import pictures
from streamer.datasets.avobjects.classes import CLASSES, NAMES
from streamer.datasets.avobjects.plan import DEFAULT, name_of, plan_segment, render_frame
from streamer.datasets.common import speech
from streamer.datasets.common.media import (
    Segment,
    labels_csv,
    results,
    write_events,
    write_mp4,
)
from streamer.errors import ConfigError

FORMAT = "avobjects/1"
PHOTO_LICENCES = {
    "chelsea": "CC0, Stefan van der Walt (scikit-image sample data)",
    "coffee": "CC0, Rachel Michetti (scikit-image sample data)",
    "clock": "public domain, Stefan van der Walt (scikit-image sample data)",
}
EMOJI_LICENCE = "Noto Color Emoji, SIL OFL 1.1 (Debian fonts-noto-color-emoji)"


@dataclass(frozen=True)
class Summary:
    out: Path
    clips: dict[str, int]  # per split
    per_class: dict[str, int]
    seconds: dict[str, float]  # media duration per split
    elapsed_s: float  # wall-clock time taken

    def lines(self) -> list[str]:
        rows = [
            f"{s}: {self.clips[s]} clips ({self.per_class[s]} per class), {self.seconds[s]:.0f} s"
            for s in SPLITS
        ]
        return [f"wrote {self.out} ({len(CLASSES)} classes)", *rows,
                f"took {self.elapsed_s:.1f} s"]  # fmt: skip


@dataclass(frozen=True)
class _Job:
    out: Path
    seed: int
    split: Split
    index: int  # 0-based clip (= segment) of the split
    settings: Settings

    @property
    def name(self) -> str:
        return f"clip_{self.index + 1:04d}"


def _run(job: _Job) -> Segment:
    plan = plan_segment(job.seed, job.split, job.index, job.settings)
    layout = job.settings.layout
    folder = job.out / job.split
    audio = speech.render(plan.audio, layout)
    n_frames = layout.segment_ns * layout.fps // NS
    write_mp4(folder / f"{job.name}.mp4", layout, n_frames,
              lambda vi: render_frame(plan, vi, job.settings), audio)  # fmt: skip
    write_events(folder / f"{job.name}.jsonl", plan.text.events)
    return Segment(0.0, layout.segment_s, name_of(plan))


def _meta(seed: int, sizes: dict[Split, int], settings: Settings) -> dict[str, Any]:
    layout = settings.layout
    pics = pictures.catalogue()
    splits: dict[str, Any] = {}
    for split in SPLITS:
        plans = [plan_segment(seed, split, i, settings) for i in range(sizes[split])]
        splits[split] = {
            "clips": sizes[split],
            "voice_pool": list(speech.voices(split)),
            "voices_used": sorted({p.audio.key.voice for p in plans if p.audio.key}),
            "picture_pool": [pics[i].source for c in pictures.pool(split) for i in c],
            "pictures_used": sorted(
                {pics[p.video.image].source for p in plans if p.video.image is not None}
            ),
            "label_counts": {n: sum(name_of(p) == n for p in plans) for n in NAMES},
        }
    return {
        "format": FORMAT,
        "seed": seed,
        "classes": list(NAMES),
        "clip_seconds": layout.segment_s,
        "video": {
            "codec": "h264",
            "fps": layout.fps,
            "width": layout.width,
            "height": layout.height,
            "pix_fmt": "yuv420p",
        },  # fmt: skip
        "audio": {"codec": "aac", "rate": layout.audio_rate, "channels": 1},
        "pictures": {"emoji": EMOJI_LICENCE, "photos": PHOTO_LICENCES},
        "settings": settings.to_dict(),
        "splits": splits,
    }


def generate(out: Path, *, clips: int, per_class: int, seed: int, workers: int = 2,
             settings: Settings = DEFAULT) -> Summary:  # fmt: skip
    """``per_class`` train clips and ``clips`` test clips of every class, under ``out``."""
    started = time.monotonic()
    if clips < 1:
        raise ConfigError("clips", f"test clips per class must be at least 1, got {clips}")
    if per_class < 1:
        raise ConfigError("per_class", f"train clips per class must be at least 1, got {per_class}")
    speech.require_espeak()
    pictures.sprites()  # the font and photos are there (and are drawn once, before forking)
    n = len(CLASSES)
    per: dict[Split, int] = {"train": per_class, "test": clips}
    sizes: dict[Split, int] = {s: per[s] * n for s in SPLITS}
    out = Path(out)
    meta = _meta(seed, sizes, settings)
    keys = [plan_segment(seed, s, i, settings).audio.key for s in SPLITS for i in range(sizes[s])]
    speech.prefetch((k for k in keys if k is not None), workers=max(workers, 1))
    jobs = [_Job(out, seed, s, i, settings) for s in SPLITS for i in range(sizes[s])]
    for split in SPLITS:
        (out / split).mkdir(parents=True, exist_ok=True)
    rows: dict[Split, list[tuple[str, Segment]]] = {s: [] for s in SPLITS}
    for job, seg in zip(jobs, results(_run, jobs, workers), strict=True):
        rows[job.split].append((job.name, seg))
    for split in SPLITS:
        (out / split / "labels.csv").write_text(labels_csv(rows[split]), encoding="utf-8")
    (out / "meta.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n",
                                   encoding="utf-8")  # fmt: skip
    return Summary(
        out=out,
        clips={s: sizes[s] for s in SPLITS},
        per_class={s: per[s] for s in SPLITS},
        seconds={s: sizes[s] * settings.layout.segment_s for s in SPLITS},
        elapsed_s=time.monotonic() - started,
    )
