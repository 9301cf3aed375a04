"""Read a clip folder (the generic training format) into labelled windows, through the
same sources and aligner as a live run, so training sees exactly what live runs see.

    DATA/<split>/clip_0001.mp4     video + audio (any codec PyAV reads)
    DATA/<split>/clip_0001.jsonl   text events: {"t": seconds_from_clip_start, "text": "..."}
    DATA/<split>/labels.csv        clip,start,end,label   (labelled time segments)

Each clip is replayed unpaced on a set clock that starts at a hop-aligned epoch time, so
the clip's PTS, its text events and its labels all land on the same time axis. A window
is labelled when it lies inside one labelled segment; others are not used.

Decoded windows are cached (``DATA/.cache``) keyed by the files, the model's input spec
and the window settings, so a second run skips decoding; a frozen encoder's features of
those items are cached beside them (:mod:`streamer.training.embedding`).
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from models.spec import ModelSpec
from models.windows import WindowInputs
from streamer.align.aligner import StreamAligner
from streamer.clock import SetClock
from streamer.config import WindowConfig
from streamer.errors import ConfigError, SourceEnded, SourceError, StreamerError
from streamer.frames import NS, TextEvent, Window
from streamer.inference.runner import window_inputs
from streamer.sources.av import AVSource

log = logging.getLogger(__name__)

T0_NS = 1_700_000_000 * NS  # where every clip starts on the set clock (hop-aligned)
CACHE_VERSION = 2  # 2: windows of clips longer than the aligner buffer are no longer lost


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    label: str


@dataclass
class WindowSet:
    """Labelled windows with their items stored once (overlapping windows share them)."""

    frames: npt.NDArray[np.uint8]  # [F, H, W, 3]
    segments: npt.NDArray[np.float16]  # [A, S]
    texts: list[str]  # [E]
    text_t: npt.NDArray[np.float64]  # [E] seconds on the clip's axis
    video_idx: npt.NDArray[np.int32]  # [W, Tv], -1 = absent
    audio_idx: npt.NDArray[np.int32]  # [W, Ta]
    text_idx: npt.NDArray[np.int32]  # [W, maxE], -1 = padding
    start_t: npt.NDArray[np.float64]  # [W] window start, seconds on the clip's axis
    labels: npt.NDArray[np.int64]  # [W] class index
    clip: npt.NDArray[np.int32]  # [W] which clip
    key: str = ""  # what the window cache keys it by (files, spec, window); "" if not cached

    def __len__(self) -> int:
        return len(self.labels)

    def inputs(self, i: int) -> WindowInputs:
        # keys are unused by training; the full-recompute path ignores them
        return WindowInputs(
            session=int(self.clip[i]),
            video=[None if j < 0 else (int(j), self.frames[j]) for j in self.video_idx[i]],
            audio=[
                None if j < 0 else (int(j), self.segments[j].astype(np.float32))
                for j in self.audio_idx[i]
            ],
            text=[
                (int(j), self.texts[j], float(self.text_t[j] - self.start_t[i]))
                for j in self.text_idx[i]
                if j >= 0
            ],
        )

    def all_inputs(self) -> list[WindowInputs]:
        return [self.inputs(i) for i in range(len(self))]


def read_labels(split_dir: Path) -> dict[str, list[Segment]]:
    path = split_dir / "labels.csv"
    if not path.is_file():
        raise ConfigError("DATA", f"no labels.csv in {split_dir}")
    out: dict[str, list[Segment]] = {}
    with path.open(newline="") as f:
        for n, row in enumerate(csv.DictReader(f), start=2):
            try:
                seg = Segment(float(row["start"]), float(row["end"]), str(row["label"]))
                out.setdefault(str(row["clip"]), []).append(seg)
            except (KeyError, TypeError, ValueError):
                raise ConfigError("DATA", f"{path}:{n}: expected clip,start,end,label") from None
    return out


def read_text_events(path: Path, stream: str) -> list[TextEvent]:
    events: list[TextEvent] = []
    if not path.is_file():
        return events
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            events.append(TextEvent(stream, T0_NS + round(float(obj["t"]) * NS), str(obj["text"])))
        except (ValueError, KeyError, TypeError):
            log.warning("%s:%d: not a text event, skipped", path, n)
    return events


async def clip_windows(
    media: Path, texts: list[TextEvent], spec: ModelSpec, window: WindowConfig
) -> list[Window]:
    """Every window of one clip, as a live run would cut it (unpaced); ``media`` absolute."""
    stream = media.stem
    clock = SetClock(T0_NS)
    src = AVSource(
        f"file://{media}", video=True, audio=True, spec=spec, clock=clock,
        stream=stream, realtime=False, slot_frames=True,
    )  # fmt: skip
    aligner = StreamAligner(
        stream, length_ns=window.length_ns, hop_ns=window.hop_ns,
        max_delay_ns=window.max_delay_ns, fps=spec.fps, audio_rate=spec.audio_rate,
        modalities=("video", "audio", "text"),
    )  # fmt: skip
    for ev in texts:
        aligner.push(ev)
    aligner.end("text")  # every event is known: text never holds a window back
    out: list[Window] = []
    await src.open()
    try:
        while True:
            try:
                aligner.push(await src.recv())
            except SourceEnded:
                break
            # take windows as the media's watermarks pass them: the aligner buffers at
            # most max_buffer_s, and gives up the oldest windows of a longer clip
            out.extend(aligner.poll(T0_NS))
    finally:
        await src.close()
    aligner.end("video")
    aligner.end("audio")
    out.extend(aligner.flush())
    return out


def _label_of(start_s: float, length: float, segments: list[Segment]) -> str | None:
    for s in segments:
        if start_s >= s.start - 1e-6 and start_s + length <= s.end + 1e-6:
            return s.label
    return None


def _cache_key(split_dir: Path, spec: ModelSpec, window: WindowConfig) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([CACHE_VERSION, spec.to_dict(), window.model_dump()]).encode())
    for p in sorted(split_dir.iterdir()):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def load_split(
    split_dir: Path,
    spec: ModelSpec,
    window: WindowConfig,
    *,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> WindowSet:
    """The labelled windows of one split (``DATA/train`` or ``DATA/test``), cached."""
    if not split_dir.is_dir():
        raise ConfigError("DATA", f"not a directory: {split_dir}")
    cache_dir = split_dir.parent / ".cache"
    key = _cache_key(split_dir, spec, window) + (f"-first{limit}" if limit else "")
    cached = cache_dir / f"{split_dir.name}-{key}.npz"
    if cached.is_file():
        return replace(_load_npz(cached), key=key)
    ws = _build(split_dir, spec, window, limit, progress)
    cache_dir.mkdir(exist_ok=True)
    tmp = cached.with_suffix(".tmp.npz")
    _save_npz(ws, tmp)
    tmp.replace(cached)
    return replace(ws, key=key)


def _build(
    split_dir: Path,
    spec: ModelSpec,
    window: WindowConfig,
    limit: int | None,
    progress: Callable[[int, int], None] | None,
) -> WindowSet:
    labels = read_labels(split_dir)
    names = sorted(labels)[:limit] if limit else sorted(labels)
    index = {lab: i for i, lab in enumerate(spec.labels)}
    frames: list[np.ndarray] = []
    segs: list[np.ndarray] = []
    texts: list[str] = []
    text_t: list[float] = []
    rows: list[tuple[list[int], list[int], list[int], float, int, int]] = []
    for ci, name in enumerate(names):
        found = sorted(split_dir.resolve().glob(f"{name}.*"))
        media = next((p for p in found if p.suffix not in (".jsonl", ".csv")), None)
        if media is None:
            raise ConfigError("DATA", f"{split_dir}: no media file for clip {name!r}")
        events = read_text_events(split_dir / f"{name}.jsonl", media.stem)
        try:
            windows = asyncio.run(clip_windows(media, events, spec, window))
        except SourceError as err:
            log.error("%s; clip skipped", err)
            continue
        frame_of: dict[int, int] = {}
        seg_of: dict[int, int] = {}
        text_of: dict[tuple[int, str], int] = {}
        for w in windows:
            start_s = (w.start_ns - T0_NS) / NS
            label = _label_of(start_s, window.length, labels[name])
            if label is None:
                continue
            if label not in index:
                raise StreamerError(f"{split_dir}/labels.csv: label {label!r} not in the model")
            inp = window_inputs(w, spec)
            vid = []
            for v in inp.video:
                if v is None:
                    vid.append(-1)
                    continue
                k = int(v[0])  # type: ignore[call-overload]
                if k not in frame_of:
                    frame_of[k] = len(frames)
                    frames.append(v[1])
                vid.append(frame_of[k])
            aud = []
            for a in inp.audio:
                if a is None:
                    aud.append(-1)
                    continue
                k = int(a[0])  # type: ignore[call-overload]
                if k not in seg_of:
                    seg_of[k] = len(segs)
                    segs.append(a[1].astype(np.float16))
                aud.append(seg_of[k])
            txt = []
            for e in w.texts:
                tk = (e.pts_ns, e.text)
                if tk not in text_of:
                    text_of[tk] = len(texts)
                    texts.append(e.text)
                    text_t.append((e.pts_ns - T0_NS) / NS)
                txt.append(text_of[tk])
            rows.append((vid, aud, txt, start_s, index[label], ci))
        if progress is not None:
            progress(ci + 1, len(names))
    if not rows:
        raise StreamerError(f"{split_dir}: no labelled windows")
    tv = max(len(r[0]) for r in rows)
    ta = max(len(r[1]) for r in rows)
    te = max([1, *(len(r[2]) for r in rows)])

    def pad(xs: list[int], n: int) -> list[int]:
        return xs + [-1] * (n - len(xs))

    size = spec.image_size
    return WindowSet(
        frames=np.stack(frames) if frames else np.zeros((0, size, size, 3), np.uint8),
        segments=np.stack(segs) if segs else np.zeros((0, spec.segment_samples), np.float16),
        texts=texts,
        text_t=np.asarray(text_t, dtype=np.float64),
        video_idx=np.asarray([pad(r[0], tv) for r in rows], dtype=np.int32),
        audio_idx=np.asarray([pad(r[1], ta) for r in rows], dtype=np.int32),
        text_idx=np.asarray([pad(r[2], te) for r in rows], dtype=np.int32),
        start_t=np.asarray([r[3] for r in rows], dtype=np.float64),
        labels=np.asarray([r[4] for r in rows], dtype=np.int64),
        clip=np.asarray([r[5] for r in rows], dtype=np.int32),
    )


def _save_npz(ws: WindowSet, path: Path) -> None:
    np.savez(
        path, frames=ws.frames, segments=ws.segments,
        texts=np.asarray(ws.texts, dtype=np.str_), text_t=ws.text_t,
        video_idx=ws.video_idx, audio_idx=ws.audio_idx, text_idx=ws.text_idx,
        start_t=ws.start_t, labels=ws.labels, clip=ws.clip,
    )  # fmt: skip


def _load_npz(path: Path) -> WindowSet:
    with np.load(path, allow_pickle=False) as z:
        return WindowSet(
            frames=z["frames"], segments=z["segments"], texts=[str(t) for t in z["texts"]],
            text_t=z["text_t"], video_idx=z["video_idx"], audio_idx=z["audio_idx"],
            text_idx=z["text_idx"], start_t=z["start_t"], labels=z["labels"], clip=z["clip"],
        )  # fmt: skip
