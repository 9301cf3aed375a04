"""``streamer record``: what the configured streams capture, written as training clips.

For each stream, ``OUT/<stream>_<time>.mp4``: H.264 video at ``--size`` square, at most
``--fps`` frames a second (the first of each 1/fps, at its capture time), and AAC mono
audio at the model's rate (the modalities the stream has); and ``OUT/<stream>_<time>.jsonl``,
its text events (``{"t": seconds, "text": ...}``). That is the clip folder format
``streamer train`` reads (:mod:`streamer.training.clipset`). With ``--label L`` each
clip is appended to ``OUT/labels.csv`` as one segment labelled L.

The items come through the same sources as a live run (``streamer run``), on the node
clock: a clip's times are its items' capture times from the recording's start. A
recording stops after ``--seconds`` of captured time (a paced source: as many seconds of
wall clock; an unpaced file: as soon as that much of it is read), when every source has
ended, or on SIGINT/SIGTERM; what was captured is written either way. A source that
fails is reported and ends its part of the clip; the other streams go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import logging
import signal
import time
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from models.spec import ModelSpec
from streamer.clock import NODE_CLOCK, Clock
from streamer.config import Config, StreamConfig
from streamer.errors import ConfigError, SourceEnded, SourceError
from streamer.frames import NS, AudioChunk, Item, TextEvent, VideoFrame
from streamer.sinks.broker import broker_for
from streamer.sources.base import Source
from streamer.sources.factory import open_sources
from streamer.sources.mqtt_text import MqttTextInput

log = logging.getLogger(__name__)

X264 = {"preset": "veryfast", "crf": "23", "threads": "1", "bf": "0"}
GRACE_S = 2.0  # beyond --seconds of wall clock, for a source that stopped sending
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
AUDIO_BLOCK = 1024


@dataclass(frozen=True)
class Recording:
    size: int = 256  # square frames, as the pipeline converts them
    fps: int = 10
    seconds: float = 10.0
    label: str | None = None


class ClipWriter:
    """One stream's clip, written as its items arrive (nothing held beyond a frame)."""

    def __init__(self, base: Path, *, t0_ns: int, rec: Recording, spec: ModelSpec,
                 video: bool, audio: bool) -> None:  # fmt: skip
        self.mp4, self.jsonl = base.with_suffix(".mp4"), base.with_suffix(".jsonl")
        self.t0_ns = t0_ns
        self.rate = spec.audio_rate
        self.frames = 0
        self.samples = 0  # audio written, silence filled in included
        self.texts = 0
        self.fps = rec.fps
        self._last_slot = -1
        self._out = av.open(str(self.mp4), mode="w", format="mp4")
        self._video = self._audio = None
        if video:
            vs = self._out.add_stream("libx264", rate=rec.fps, options=dict(X264))
            vs.width = vs.height = rec.size
            vs.pix_fmt = "yuv420p"
            vs.codec_context.time_base = Fraction(1, 1000)  # frames at their capture times
            self._video = vs
        if audio:
            aus = self._out.add_stream("aac", rate=self.rate)
            aus.layout = "mono"
            self._audio = aus
        self._text = self.jsonl.open("w", encoding="utf-8")

    def add(self, item: Item) -> None:
        if isinstance(item, VideoFrame) and self._video is not None:
            ms = (item.pts_ns - self.t0_ns) // 1_000_000
            slot = ms * self.fps // 1000
            if ms < 0 or slot <= self._last_slot:  # the first frame of each 1/fps, in order
                return
            self._last_slot = slot
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(item.image), format="rgb24")
            frame.pts, frame.time_base = ms, Fraction(1, 1000)
            self._out.mux(self._video.encode(frame))
            self.frames += 1
        elif isinstance(item, AudioChunk) and self._audio is not None:
            self._add_audio(item)
        elif isinstance(item, TextEvent):
            t = round((item.pts_ns - self.t0_ns) / NS, 3)
            self._text.write(json.dumps({"t": t, "text": item.text}, ensure_ascii=False) + "\n")
            self.texts += 1

    def _add_audio(self, chunk: AudioChunk) -> None:
        """At its place in time: a gap is filled with silence, an overlap is cut."""
        assert self._audio is not None
        at = round((chunk.pts_ns - self.t0_ns) * self.rate / NS)
        samples = chunk.samples
        if at > self.samples:
            samples = np.concatenate([np.zeros(at - self.samples, np.float32), samples])
        elif at < self.samples:
            samples = samples[self.samples - at :]
        for i in range(0, len(samples), AUDIO_BLOCK):
            block = np.ascontiguousarray(samples[None, i : i + AUDIO_BLOCK], dtype=np.float32)
            af = av.AudioFrame.from_ndarray(block, format="fltp", layout="mono")
            af.sample_rate, af.pts, af.time_base = self.rate, self.samples, Fraction(1, self.rate)
            self._out.mux(self._audio.encode(af))
            self.samples += block.shape[1]

    def close(self) -> None:
        try:
            for s in (self._video, self._audio):
                if s is not None:
                    self._out.mux(s.encode(None))
        finally:
            self._out.close()
            self._text.close()


async def _read(src: Source, writer: ClipWriter, end_ns: int, stream: str) -> None:
    """Until ``end_ns`` of captured time, the source's end, its failure or a cancel."""
    try:
        await src.open()
        while True:
            item = await src.recv()
            if item.pts_ns >= end_ns:
                return
            writer.add(item)
    except SourceEnded:
        return
    except SourceError as e:
        log.error("stream %s: %s; its recording ends here", stream, e)
    finally:
        await src.close()


async def record(cfg: Config, out: Path, rec: Recording, *, clock: Clock = NODE_CLOCK) -> int:
    """Record every stream of ``cfg`` into the folder ``out``; the exit code."""
    if rec.label is not None and ("," in rec.label or not rec.label.strip()):
        raise ConfigError("--label", f"{rec.label!r}: a label is one word or phrase, no comma")
    if any("webrtc" in (s.video, s.audio) for s in cfg.streams):
        raise ConfigError("streams", "record takes no webrtc sources (run needs its server)")
    spec = replace(ModelSpec(), image_size=rec.size, fps=rec.fps)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    async with broker_for(cfg.mqtt) as mqtt:
        routes = {t: s.id for s in cfg.streams for t in s.text_topics(mqtt.prefix, cfg.node)}
        text_in = MqttTextInput(mqtt, routes, clock=clock, client_id=f"streamer-record-{stamp}")
        async with text_in:
            t0 = clock.now_ns()
            end_ns = t0 + round(rec.seconds * NS)
            writers: dict[str, ClipWriter] = {}
            tasks: list[asyncio.Task[None]] = []
            loop = asyncio.get_running_loop()
            for sig in STOP_SIGNALS:  # stop early: what was captured is still written
                loop.add_signal_handler(sig, lambda: [t.cancel() for t in tasks])
            try:
                async with asyncio.TaskGroup() as tg:
                    for s in cfg.streams:
                        w = writers[s.id] = _writer(out / f"{s.id}_{stamp}", s, t0, rec, spec)
                        srcs = open_sources(s, spec=spec, clock=clock, capture=cfg.capture)
                        readers = [_read(src, w, end_ns, s.id) for src in srcs]
                        if s.id in routes.values():  # text alone never ends it early
                            readers.append(_read(text_in.source(s.id), w, end_ns, s.id))
                        for r in readers:  # a dead camera: the wall clock ends it too
                            tasks.append(tg.create_task(_within(r, rec.seconds + GRACE_S)))
            finally:
                for sig in STOP_SIGNALS:
                    loop.remove_signal_handler(sig)
                for w in writers.values():
                    w.close()
    _report(out, writers, rec)
    return 0


def _writer(base: Path, s: StreamConfig, t0: int, rec: Recording, spec: ModelSpec) -> ClipWriter:
    return ClipWriter(base, t0_ns=t0, rec=rec, spec=spec, video=s.video is not None,
                      audio=s.audio is not None)  # fmt: skip


async def _within(reader: Coroutine[Any, Any, None], seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await reader


def _report(out: Path, writers: dict[str, ClipWriter], rec: Recording) -> None:
    rows = []
    for sid, w in writers.items():
        seconds = max(w.frames / rec.fps, w.samples / w.rate)
        print(f"{w.mp4.name}: {w.frames} frames, {w.samples / w.rate:.1f} s of audio, "
              f"{w.texts} text events ({sid})")  # fmt: skip
        rows.append([w.mp4.stem, "0", f"{min(seconds, rec.seconds):.3f}", rec.label])
    if rec.label is not None:
        labels = out / "labels.csv"
        new = not labels.exists()
        with labels.open("a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["clip", "start", "end", "label"])
            writer.writerows(rows)
        print(f"{labels}: {len(rows)} clips labelled {rec.label!r}")
