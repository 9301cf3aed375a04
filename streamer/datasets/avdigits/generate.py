"""Write an AV-digits data set in the generic clip format.

    OUT/train/clip_0001.mp4    H.264 (10 fps, 128x128, yuv420p) + AAC (16 kHz mono)
    OUT/train/clip_0001.jsonl  {"t": seconds_from_clip_start, "text": "..."} per line
    OUT/train/labels.csv       clip,start,end,label  (one row per segment)
    OUT/test/...
    OUT/meta.json              settings, pools, voices and images used per split

Clip k (0-based) of a split holds segments ``k * segments_per_clip ...`` of that split's
sequence. Same arguments, same bytes: every file depends only on (seed, split, segment),
so a pool of worker processes (fork) changes the speed, not the output.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamer.datasets.avdigits import images, speech
from streamer.datasets.avdigits.clips import write_clip
from streamer.datasets.avdigits.plan import plan_segment
from streamer.datasets.avdigits.settings import DEFAULT, SPLITS, Settings, Split
from streamer.datasets.common.media import Segment, labels_csv, results, with_segment
from streamer.errors import ConfigError

FORMAT = "avdigits/1"


@dataclass(frozen=True)
class Summary:
    out: Path
    clips: dict[str, int]  # per split
    segments: dict[str, int]
    seconds: dict[str, float]  # media duration per split
    elapsed_s: float  # wall-clock time taken

    def lines(self) -> list[str]:
        rows = [
            f"{s}: {self.clips[s]} clips, {self.segments[s]} segments, {self.seconds[s]:.0f} s"
            for s in SPLITS
        ]
        return [f"wrote {self.out}", *rows, f"took {self.elapsed_s:.1f} s"]


@dataclass(frozen=True)
class _Job:
    out: Path
    seed: int
    split: Split
    clip: int  # 0-based
    segments: int
    settings: Settings

    @property
    def name(self) -> str:
        return f"clip_{self.clip + 1:04d}"


def _run(job: _Job) -> list[Segment]:
    return write_clip(
        job.out / job.split / f"{job.name}.mp4",
        job.out / job.split / f"{job.name}.jsonl",
        seed=job.seed,
        split=job.split,
        first=job.clip * job.segments,
        segments=job.segments,
        settings=job.settings,
    )


def split_sizes(clips: int, test_fraction: float) -> dict[Split, int]:
    if clips < 2:
        raise ConfigError("clips", f"must be at least 2 (one train, one test), got {clips}")
    if not 0 < test_fraction < 1:
        raise ConfigError("test_fraction", f"must be between 0 and 1, got {test_fraction}")
    test = min(max(1, round(clips * test_fraction)), clips - 1)
    return {"train": clips - test, "test": test}


def _meta(seed: int, sizes: dict[Split, int], segments_per_clip: int,
          settings: Settings) -> dict[str, Any]:  # fmt: skip
    layout = settings.layout
    splits: dict[str, Any] = {}
    for split in SPLITS:
        plans = [
            plan_segment(seed, split, i, settings) for i in range(sizes[split] * segments_per_clip)
        ]
        pool = images.pool(split)
        splits[split] = {
            "clips": sizes[split],
            "segments": len(plans),
            "voice_pool": list(speech.voices(split)),
            "image_pool": sorted(i for digit in pool for i in digit),
            "voices_used": sorted({p.audio.key.voice for p in plans if p.audio.key}),
            "images_used": sorted({p.video.image for p in plans if p.video.image is not None}),
            "label_counts": [sum(p.label == d for p in plans) for d in range(10)],
        }
    return {
        "format": FORMAT,
        "seed": seed,
        "segments_per_clip": segments_per_clip,
        "clip_seconds": segments_per_clip * layout.segment_s,
        "video": {
            "codec": "h264",
            "fps": layout.fps,
            "width": layout.width,
            "height": layout.height,
            "pix_fmt": "yuv420p",
        },
        "audio": {"codec": "aac", "rate": layout.audio_rate, "channels": 1},
        "images": "sklearn.datasets.load_digits; test = index % 5 == 0",
        "settings": settings.to_dict(),
        "splits": splits,
    }


def generate(
    out: Path,
    *,
    clips: int,
    seed: int,
    test_fraction: float = 0.2,
    segments_per_clip: int = 4,
    segment_s: float = 3.0,
    workers: int = 2,
    settings: Settings = DEFAULT,
) -> Summary:
    """Write ``clips`` clips (split train/test by ``test_fraction``) under ``out``."""
    started = time.monotonic()
    sizes = split_sizes(clips, test_fraction)
    if segments_per_clip < 1:
        raise ConfigError("segments_per_clip", f"must be at least 1, got {segments_per_clip}")
    settings = with_segment(settings, segment_s)
    speech.require_espeak()
    out = Path(out)
    meta = _meta(seed, sizes, segments_per_clip, settings)
    keys = [
        plan_segment(seed, split, i, settings).audio.key
        for split in SPLITS
        for i in range(sizes[split] * segments_per_clip)
    ]
    speech.prefetch((k for k in keys if k is not None), workers=max(workers, 1))
    jobs = [
        _Job(out, seed, split, k, segments_per_clip, settings)
        for split in SPLITS
        for k in range(sizes[split])
    ]
    for split in SPLITS:
        (out / split).mkdir(parents=True, exist_ok=True)
    rows: dict[Split, list[tuple[str, Segment]]] = {s: [] for s in SPLITS}
    for job, segments in zip(jobs, results(_run, jobs, workers), strict=True):
        rows[job.split].extend((job.name, seg) for seg in segments)
    for split in SPLITS:
        (out / split / "labels.csv").write_text(labels_csv(rows[split]), encoding="utf-8")
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    clip_s = segments_per_clip * settings.layout.segment_s
    return Summary(
        out=out,
        clips={s: sizes[s] for s in SPLITS},
        segments={s: len(rows[s]) for s in SPLITS},
        seconds={s: sizes[s] * clip_s for s in SPLITS},
        elapsed_s=time.monotonic() - started,
    )
