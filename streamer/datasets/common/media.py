"""The generic clip folder format, written reproducibly.

``clip_NNNN.mp4`` is byte-for-byte reproducible: single-threaded x264 with fixed options,
``+bitexact`` muxing (no creation time, no library version strings). ``clip_NNNN.jsonl``
holds ``{"t": seconds_from_clip_start, "text": ...}`` per line; ``labels.csv`` one row per
labelled segment. :func:`results` maps jobs over a fork pool: same output, more speed.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import TypeVar

import av
import numpy as np
import numpy.typing as npt
from av.codec.context import Flags

from streamer.datasets.avdigits.settings import NS, Layout, Settings
from streamer.errors import ConfigError

AUDIO_BLOCK = 1024
X264 = {"preset": "veryfast", "crf": "28", "g": "20", "threads": "1", "bf": "0"}
J = TypeVar("J")
R = TypeVar("R")


@dataclass(frozen=True)
class Segment:
    start: float  # seconds from the clip's start
    end: float
    label: str


def write_mp4(mp4: Path, layout: Layout, n_frames: int,
              frame: Callable[[int], npt.NDArray[np.uint8]],
              audio: npt.NDArray[np.float32]) -> None:  # fmt: skip
    """``n_frames`` frames (``frame(i)``: RGB uint8 at ``i / fps`` s) and mono ``audio``."""
    bitexact = {"fflags": "+bitexact"}
    with av.open(str(mp4), mode="w", format="mp4", options=bitexact) as out:
        vs = out.add_stream("libx264", rate=layout.fps, options=dict(X264))
        vs.width, vs.height = layout.width, layout.height
        vs.pix_fmt = "yuv420p"
        vs.codec_context.flags |= Flags.bitexact
        aus = out.add_stream("aac", rate=layout.audio_rate)
        aus.layout = "mono"
        aus.bit_rate = 48_000
        aus.codec_context.flags |= Flags.bitexact
        vi = ai = 0
        while vi < n_frames or ai < len(audio):
            if vi < n_frames and vi * layout.audio_rate <= ai * layout.fps:
                vf = av.VideoFrame.from_ndarray(frame(vi), format="rgb24")
                vf.pts = vi
                vf.time_base = Fraction(1, layout.fps)
                out.mux(vs.encode(vf))
                vi += 1
            else:
                block = audio[ai : ai + AUDIO_BLOCK]
                af = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(block[None, :]), format="fltp", layout="mono"
                )
                af.sample_rate = layout.audio_rate
                af.pts = ai
                af.time_base = Fraction(1, layout.audio_rate)
                out.mux(aus.encode(af))
                ai += len(block)
        out.mux(vs.encode(None))
        out.mux(aus.encode(None))


def write_events(jsonl: Path, events: Iterable[tuple[float, str]]) -> None:
    """One ``{"t", "text"}`` line per event (``t``: seconds from the clip's start)."""
    lines = [json.dumps({"t": t, "text": text}, ensure_ascii=False) for t, text in events]
    jsonl.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def labels_csv(rows: Iterable[tuple[str, Segment]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["clip", "start", "end", "label"])
    for name, seg in rows:
        w.writerow([name, f"{seg.start:.3f}", f"{seg.end:.3f}", seg.label])
    return buf.getvalue()


def results(run: Callable[[J], R], jobs: list[J], workers: int) -> Iterator[R]:
    """``map(run, jobs)`` in order, over ``workers`` forked processes when more than one."""
    if workers <= 1 or len(jobs) <= 1:
        yield from map(run, jobs)
        return
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        yield from pool.imap(run, jobs, chunksize=4)


def output_folder(out: str, seed: int) -> Path:
    """The checked ``OUT`` and ``--seed`` of a ``streamer dataset`` command."""
    if not out:
        raise ConfigError("out", "an output folder is required")
    if seed < 0:
        raise ConfigError("seed", f"must be >= 0, got {seed}")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConfigError("out", f"{out} exists and is not a folder")
    return path


def with_segment(base: Settings, segment_s: float) -> Settings:
    """``base`` with segments of ``segment_s`` seconds (a whole number of frames)."""
    layout = replace(base.layout, segment_s=float(segment_s))
    if not segment_s > 0:
        raise ConfigError("segment_s", f"must be positive, got {segment_s}")
    if layout.segment_ns * layout.fps % NS or layout.segment_samples != (
        layout.segment_s * layout.audio_rate
    ):
        raise ConfigError(
            "segment_s", f"must hold a whole number of frames at {layout.fps} fps, got {segment_s}"
        )
    return replace(base, layout=layout)
