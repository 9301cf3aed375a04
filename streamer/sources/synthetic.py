"""Deterministic live sources for demos and tests: ``synthetic:`` URLs.

    synthetic:pattern?fps=10&size=320x240&seed=0   video: a square moving over a gradient
    synthetic:tone?freq=440&seed=0                 audio: a sine tone in 20 ms chunks
    synthetic:[?...]                               both defaults (whichever is asked for)
    synthetic:avdigits?seed=0&fps=10               AV-digits: handwritten digit + spoken word

At most 7680x4320 (8K UHD), 0.01-120 fps, 20 kHz and a 32-bit seed: beyond these a URL
is a :class:`~streamer.errors.SourcePermanentError`, found by :func:`synthetic_options`
before anything is allocated.

``avdigits`` (and any other generator :mod:`streamer.generators` names) is on the epoch
clock: the frame stamped ``pts_ns`` shows the generator's content at time ``pts_ns``
(AV-digits: held-out images and voices), so the truth of any window follows from its
start alone (:func:`avdigits_label`); :func:`avdigits_text` yields the matching text
events for a publisher. The generator is imported when a URL first names it.

Frames are drawn at ``size`` and converted once to the model's size, like a camera's.
Paced by the wall clock with asyncio (a frame is drawn and scaled in a worker thread,
like a camera's demuxer thread would): each item is stamped at its scheduled
time and :meth:`SyntheticSource.recv` sleeps until that time (until the end of an audio
chunk, when its last sample would have been captured). A consumer more than ``max_lag_s``
behind skips items, counted in ``dropped``, as a capture device would.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from urllib.parse import parse_qsl, urlparse

import numpy as np
import numpy.typing as npt

from models.spec import ModelSpec
from streamer.clock import NODE_CLOCK, Clock
from streamer.errors import SourceError, SourcePermanentError, StreamerError
from streamer.frames import NS, AudioChunk, Item, Modality, VideoFrame
from streamer.generators import GENERATORS, Generator, generator
from streamer.snapshots.ring import FrameTap
from streamer.sources.convert import rgb_to_frame, video_to_rgb

_AV: frozenset[Modality] = frozenset({"video", "audio"})
KINDS: dict[str, frozenset[Modality]] = {
    "": _AV,
    "pattern": frozenset({"video"}),
    "tone": frozenset({"audio"}),
    **dict.fromkeys(GENERATORS, _AV),
}
NOT_FOR_GENERATORS = ("size", "freq")  # a generator draws at its own size, its own sound
PARAMS = ("fps", "size", "freq", "seed")
CHUNK_S = 0.02


@functools.cache
def _render_pool() -> concurrent.futures.ThreadPoolExecutor:
    """Two threads draw and scale the frames of every synthetic stream (64 streams at
    320x240 and 10 fps without a drop on 2 cores); more would only fight the model."""
    return concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="synthetic-render")


MAX_SIZE = (7680, 4320)  # 8K UHD: a frame of 100 MB; more would only exhaust memory
MAX_FPS = 120.0
MIN_FPS = 0.01  # a frame every 100 s
MAX_FREQ = 20_000.0
MAX_SEED = 2**32 - 1
_SIZE_RE = re.compile(r"([0-9]{1,6})x([0-9]{1,6})")


@dataclass(frozen=True)
class SyntheticOptions:
    kind: str
    fps: float
    size: tuple[int, int]
    freq: float
    seed: int


def _bad(url: str, problem: str) -> SourcePermanentError:
    return SourcePermanentError(url, problem)


def _short(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:40] + "...")


def _number(url: str, params: dict[str, str], key: str, default: float, top: float) -> float:
    raw = params.get(key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 and not (key == "seed" and value == 0):
        raise _bad(url, f"{key} must be a positive number, got {_short(raw)}")
    if value > top:
        raise _bad(url, f"{key} must be at most {top:g}, got {_short(raw)}")
    return value


def synthetic_options(url: str, modalities: frozenset[Modality]) -> SyntheticOptions:
    """What a ``synthetic:`` URL asks for; SourcePermanentError for what it cannot have
    (an unknown kind or option, a size over MAX_SIZE, fps over MAX_FPS...). Allocates
    nothing: ``streamer check`` and ``run`` call it before anything is opened."""
    u = urlparse(url)
    if u.scheme != "synthetic":
        raise _bad(url, "expected a synthetic: URL")
    kind = u.path.strip("/")
    if kind not in KINDS:
        known = ", ".join(k for k in KINDS if k)
        raise _bad(url, f"unknown synthetic source {_short(kind)} (known: {known})")
    params = dict(parse_qsl(u.query, keep_blank_values=True))
    for key in params:
        if key not in PARAMS:
            raise _bad(url, f"unknown option {_short(key)} (known: {', '.join(PARAMS)})")
    missing = modalities - KINDS[kind]
    if missing:
        raise _bad(url, f"synthetic:{kind} has no {sorted(missing)[0]}")
    if kind in GENERATORS:
        for key in NOT_FOR_GENERATORS:
            if key in params:
                raise _bad(url, f"option {key!r} does not apply to {kind}")
        try:
            generator(kind).check()
        except StreamerError as e:
            raise _bad(url, str(e)) from e
    size = params.get("size", "320x240")
    m = _SIZE_RE.fullmatch(size)
    if m is None or int(m[1]) < 2 or int(m[2]) < 2:
        raise _bad(url, f"size must be WIDTHxHEIGHT, got {_short(size)}")
    w, h = int(m[1]), int(m[2])
    if w > MAX_SIZE[0] or h > MAX_SIZE[1]:
        top = f"{MAX_SIZE[0]}x{MAX_SIZE[1]}"
        raise _bad(url, f"size must be at most {top} (8K UHD), got {_short(size)}")
    fps = _number(url, params, "fps", 10.0, MAX_FPS)
    if fps < MIN_FPS:
        raise _bad(url, f"fps must be at least {MIN_FPS:g}, got {_short(params['fps'])}")
    return SyntheticOptions(
        kind=kind,
        fps=fps,
        size=(w, h),
        freq=_number(url, params, "freq", 440.0, MAX_FREQ),
        seed=int(_number(url, params, "seed", 0, MAX_SEED)),
    )


class PatternGenerator:
    """Frame ``i``: a colour gradient with a square moving at a constant velocity."""

    def __init__(self, size: tuple[int, int], fps: float, seed: int) -> None:
        self.width, self.height = size
        self.fps = fps
        rng = np.random.default_rng(seed)
        w, h = self.width, self.height
        self.side = max(2, min(w, h) // 4)
        self.pos0 = rng.uniform(0, 1, size=2) * [w - self.side, h - self.side]
        angle = rng.uniform(0, 2 * np.pi)
        speed = 0.5 * min(w, h)  # pixels per second
        self.velocity = speed * np.array([np.cos(angle), np.sin(angle)])
        self.colour = rng.integers(128, 256, size=3).astype(np.uint8)
        gx = np.linspace(0, 255, w, dtype=np.float32)[None, :]
        gy = np.linspace(0, 255, h, dtype=np.float32)[:, None]
        tint = rng.uniform(0.3, 1.0, size=3).astype(np.float32)
        self.background = np.empty((h, w, 3), dtype=np.uint8)
        self.background[..., 0] = (gx * tint[0]).astype(np.uint8)
        self.background[..., 1] = (gy * tint[1]).astype(np.uint8)
        self.background[..., 2] = ((gx + gy) * 0.5 * tint[2]).astype(np.uint8)

    def frame(self, i: int) -> npt.NDArray[np.uint8]:
        """RGB uint8 [height, width, 3]."""
        span = np.array([self.width - self.side, self.height - self.side], dtype=np.float64)
        p = self.pos0 + self.velocity * (i / self.fps)
        # bounce off the edges: fold the position into [0, span]
        p = np.abs(np.mod(p, 2 * np.maximum(span, 1)))
        p = np.where(p > span, 2 * span - p, p)
        x, y = (int(v) for v in p)
        img = self.background.copy()
        img[y : y + self.side, x : x + self.side] = self.colour
        return img


class ToneGenerator:
    """A phase-continuous sine at ``freq`` Hz, chunk ``j`` = samples [j*n, (j+1)*n)."""

    def __init__(self, freq: float, rate: int, chunk: int, seed: int) -> None:
        self.freq = freq
        self.rate = rate
        self.chunk = chunk
        self.phase = np.random.default_rng(seed).uniform(0, 2 * np.pi)

    def chunk_at(self, j: int) -> npt.NDArray[np.float32]:
        n = j * self.chunk + np.arange(self.chunk, dtype=np.float64)
        return (0.5 * np.sin(2 * np.pi * self.freq * n / self.rate + self.phase)).astype(np.float32)


class SyntheticSource:
    def __init__(
        self,
        url: str,
        *,
        video: bool,
        audio: bool,
        spec: ModelSpec,
        clock: Clock = NODE_CLOCK,
        stream: str = "",
        max_lag_s: float = 1.0,
        snapshot: FrameTap | None = None,
    ) -> None:
        if not (video or audio):
            raise ValueError("SyntheticSource needs video, audio or both")
        self.url = url
        self.stream = stream
        self.spec = spec
        self.clock = clock
        self.live = True
        wanted: set[Modality] = set()
        if video:
            wanted.add("video")
        if audio:
            wanted.add("audio")
        self.modalities: frozenset[Modality] = frozenset(wanted)
        opts = synthetic_options(url, self.modalities)
        self.kind = opts.kind
        self.fps = opts.fps
        self.size = opts.size
        self.freq = opts.freq
        self.seed = opts.seed
        self.max_lag_ns = round(max_lag_s * NS)
        self.snapshot = snapshot  # offered every frame drawn (the snapshot ring)
        self.dropped = 0
        self._generator: Generator | None = (
            generator(self.kind) if self.kind in GENERATORS else None
        )
        # drawn only when asked for: a background of size x 3 bytes
        self._pattern = (
            PatternGenerator(self.size, self.fps, self.seed)
            if video and self._generator is None
            else None
        )
        chunk = max(1, round(CHUNK_S * spec.audio_rate))
        self._tone = ToneGenerator(self.freq, spec.audio_rate, chunk, self.seed)
        # a generator: frame i is at epoch i / fps exactly (integer ns arithmetic)
        self._fps_q = Fraction(self.fps).limit_denominator(1000)
        self._t0: int | None = None
        self._vi = 0  # next video frame index
        self._aj = 0  # next audio chunk index
        self._closed = False

    async def open(self) -> None:
        """Start (or, after close(), restart) the signal at frame 0, now."""
        self._t0 = self.clock.now_ns()
        self._vi = self._aj = 0
        if self._generator is not None:  # the first frame / chunk at or after now
            q = self._fps_q
            self._vi = -(-self._t0 * q.numerator // (NS * q.denominator))
            self._aj = -(-self._t0 * self._tone.rate // (self._tone.chunk * NS))
            # first use may be slow (AV-digits imports sklearn and runs espeak-ng): do it
            # off the event loop
            await asyncio.to_thread(self._picture, self._vi)
            await asyncio.to_thread(self._samples, self._aj)
        self._closed = False

    def _video_ns(self, i: int) -> int:
        assert self._t0 is not None
        if self._generator is not None:
            return i * NS * self._fps_q.denominator // self._fps_q.numerator
        return self._t0 + round(i * NS / self.fps)

    def _audio_ns(self, j: int) -> int:
        assert self._t0 is not None
        if self._generator is not None:
            return j * self._tone.chunk * NS // self._tone.rate
        return self._t0 + j * self._tone.chunk * NS // self._tone.rate

    def _picture(self, index: int) -> npt.NDArray[np.uint8]:
        if self._generator is not None:
            return self._generator.frame_at(self.seed, self._video_ns(index))
        assert self._pattern is not None
        return self._pattern.frame(index)

    def _render(self, index: int) -> npt.NDArray[np.uint8]:
        frame = rgb_to_frame(self._picture(index))
        if self.snapshot is not None:
            self.snapshot(frame, self._video_ns(index))
        return video_to_rgb(frame, self.spec.image_size)

    def _samples(self, index: int) -> npt.NDArray[np.float32]:
        if self._generator is not None:
            n = self._tone.chunk
            return self._generator.audio_at_rate(self.seed, index * n, n, self._tone.rate)
        return self._tone.chunk_at(index)

    def _next(self) -> tuple[str, int, int]:
        """(modality, index, release time) of the next item due."""
        candidates: list[tuple[int, str, int]] = []
        if "video" in self.modalities:
            candidates.append((self._video_ns(self._vi), "video", self._vi))
        if "audio" in self.modalities:
            candidates.append((self._audio_ns(self._aj + 1), "audio", self._aj))
        release, kind, index = min(candidates)
        return kind, index, release

    def _skip_lag(self) -> None:
        """A consumer far behind: skip what is older than max_lag, as a device would."""
        now = self.clock.now_ns()
        while True:
            kind, index, release = self._next()
            if now - release <= self.max_lag_ns:
                return
            self.dropped += 1
            if kind == "video":
                self._vi += 1
            else:
                self._aj += 1

    async def recv(self) -> Item:
        if self._t0 is None:
            raise SourceError(self.url, "recv() before open()")
        if self._closed:
            raise SourceError(self.url, "closed")
        self._skip_lag()
        kind, index, release = self._next()
        delay = (release - self.clock.now_ns()) / NS
        if delay > 0:
            await asyncio.sleep(delay)  # pacing to the wall clock, not synchronisation
        if kind == "video":
            self._vi += 1
            # drawing and scaling a frame is a camera's work: off the event loop, like a
            # demuxer thread's (numpy and swscale release the GIL), so many streams do not
            # starve the loop that aligns, batches and publishes
            loop = asyncio.get_running_loop()
            image = await loop.run_in_executor(_render_pool(), self._render, index)
            return VideoFrame(self.stream, self._video_ns(index), image)
        self._aj += 1
        samples = self._samples(index)
        return AudioChunk(self.stream, self._audio_ns(index), samples, self._tone.rate)

    def recv_nowait(self) -> Item | None:
        return None  # nothing queued: each item is made when it is due

    async def close(self) -> None:
        self._closed = True


def avdigits_text(seed: int = 0, start_s: float | None = None) -> Iterator[tuple[float, str]]:
    """The text events of ``synthetic:avdigits?seed=N`` from ``start_s`` (epoch seconds,
    default now) on, endless: ``(epoch_seconds, text)``, in time order."""
    if start_s is None:
        start_s = NODE_CLOCK.now_ns() / NS
    return generator("avdigits").text_between(seed, start_s)


def avdigits_label(seed: int, t_s: float) -> str:
    """The true label ("0".."9") of ``synthetic:avdigits?seed=N`` at epoch time ``t_s``."""
    return generator("avdigits").label_at(seed, t_s)
