"""Spoken words: espeak-ng words in several voices, mixed into noise at a random SNR.

A voice is ``language+variant`` (e.g. ``en-gb+f3``). :data:`TEST_VOICES` are held out:
train segments never use them, test (and live) segments use only them. Words are
synthesised once per (voice, speed, pitch, word) and cached in-process;
:func:`prefetch` synthesises many in parallel (espeak-ng subprocesses).
"""

from __future__ import annotations

import io
import shutil
import subprocess
import threading
import wave
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streamer.datasets.avdigits.settings import Difficulty, Layout, Split
from streamer.errors import StreamerError

F32 = npt.NDArray[np.float32]
LANGUAGES = ("en-us", "en-gb", "en-gb-scotland", "en-029")
VARIANTS = ("", "+f3", "+m3", "+klatt", "+whisper", "+f2", "+m1", "+f4")
# unseen pairings of seen languages and variants
TEST_VOICES = ("en-gb-scotland+f3", "en-029+m3", "en-us+whisper", "en-gb+klatt")
TRAIN_VOICES = tuple(
    lang + var for lang in LANGUAGES for var in VARIANTS if lang + var not in TEST_VOICES
)
SPEEDS = (110, 140, 170, 200)  # words per minute
PITCHES = (25, 45, 65, 85)
ESPEAK_RATE = 22_050
SPEECH_RMS = 0.1  # level of the word where it is voiced


class EspeakMissing(StreamerError):
    def __init__(self) -> None:
        super().__init__("espeak-ng is not installed (apt-get install espeak-ng)")


def voices(split: Split) -> tuple[str, ...]:
    return TEST_VOICES if split == "test" else TRAIN_VOICES


@dataclass(frozen=True, order=True)
class WordKey:
    voice: str
    speed: int
    pitch: int
    word: str  # what is said


@dataclass(frozen=True)
class AudioPlan:
    spoken: int | None  # the class said (differs from the label for a distractor)
    key: WordKey | None
    tempo: float  # extra speed factor by resampling
    place: tuple[float, ...]  # where the word starts, as a fraction of the free room
    snr_db: float
    noise_beta: float  # noise colour: power ~ 1 / f**beta
    noise_seed: int


def plan_audio(rng: np.random.Generator, label: int, split: Split, d: Difficulty,
               names: tuple[str, ...]) -> AudioPlan:  # fmt: skip
    """``names[c]``: what is said for class ``c``."""
    n = len(names)
    spoken: int | None = label
    r = rng.random()
    if r < d.audio_absent:
        spoken = None
    elif r < d.audio_absent + d.audio_distractor:
        spoken = int((label + rng.integers(1, n)) % n)
    pool = voices(split)
    voice = pool[int(rng.integers(len(pool)))]
    speed = SPEEDS[int(rng.integers(len(SPEEDS)))]
    pitch = PITCHES[int(rng.integers(len(PITCHES)))]
    repeats = 2 if rng.random() < d.audio_repeat else 1
    return AudioPlan(
        spoken=spoken,
        key=None if spoken is None else WordKey(voice, speed, pitch, names[spoken]),
        tempo=float(1.0 + rng.uniform(-d.speed_jitter, d.speed_jitter)),
        place=tuple(float(rng.random()) for _ in range(repeats)),
        snr_db=float(rng.uniform(*d.audio_snr_db)),
        noise_beta=float(rng.uniform(0.0, 1.5)),
        noise_seed=int(rng.integers(2**62)),
    )


SPEECH_ZONE = (0.3, 0.7)  # fractions of the segment where words are placed

_CACHE: dict[WordKey, F32] = {}
_LOCK = threading.Lock()


def require_espeak() -> str:
    """The path of espeak-ng; :class:`EspeakMissing` when it is not installed."""
    path = shutil.which("espeak-ng")
    if path is None:
        raise EspeakMissing()
    return path


def synthesise(key: WordKey) -> F32:
    """The word at 22,050 Hz, silence trimmed, peak 1 (cached)."""
    with _LOCK:
        hit = _CACHE.get(key)
    if hit is not None:
        return hit
    cmd = [require_espeak(), "-v", key.voice, "-s", str(key.speed), "-p", str(key.pitch),
           "--stdout", key.word]  # fmt: skip
    wav = subprocess.run(cmd, check=True, capture_output=True, timeout=30).stdout
    with wave.open(io.BytesIO(wav)) as w:
        if w.getframerate() != ESPEAK_RATE or w.getsampwidth() != 2:
            raise StreamerError(f"espeak-ng: unexpected wav ({w.getframerate()} Hz)")
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    x = pcm.astype(np.float32) / 32768.0
    loud = np.flatnonzero(np.abs(x) > 0.02 * max(float(np.abs(x).max()), 1e-6))
    if len(loud):
        margin = ESPEAK_RATE // 50
        x = x[max(loud[0] - margin, 0) : loud[-1] + margin]
    x = (x / max(float(np.abs(x).max()), 1e-6)).astype(np.float32)
    x.setflags(write=False)
    with _LOCK:
        _CACHE[key] = x
    return x


def prefetch(keys: Iterable[WordKey], workers: int = 2) -> int:
    """Synthesise the keys not cached yet, ``workers`` espeak-ng processes at a time."""
    todo = sorted({k for k in keys if k not in _CACHE})
    if todo:
        require_espeak()
        with ThreadPoolExecutor(max_workers=workers) as ex:
            list(ex.map(synthesise, todo))
    return len(todo)


def _resample(x: F32, factor: float) -> F32:
    """``x`` at ``ESPEAK_RATE`` to ``len(x) * factor`` samples (linear interpolation)."""
    n = max(int(len(x) * factor), 1)
    return np.interp(np.arange(n) / factor, np.arange(len(x)), x).astype(np.float32)


def render(plan: AudioPlan, layout: Layout) -> F32:
    """The segment's audio: float32 [segment_samples] at ``layout.audio_rate``, in [-1, 1]."""
    n = layout.segment_samples
    rng = np.random.default_rng(plan.noise_seed)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.maximum(np.arange(len(spectrum)), 1.0)
    noise = np.fft.irfft(spectrum / f ** (plan.noise_beta / 2), n)
    noise *= 1.0 / max(float(np.sqrt(np.mean(noise**2))), 1e-9)
    out = noise * (SPEECH_RMS / 10 ** (plan.snr_db / 20))
    if plan.key is not None:
        word = _resample(synthesise(plan.key), layout.audio_rate / ESPEAK_RATE / plan.tempo)
        word = word[:n]
        voiced = np.abs(word) > 0.05
        rms = float(np.sqrt(np.mean(word[voiced] ** 2))) if voiced.any() else 1.0
        word = word * (SPEECH_RMS / rms)
        # the word lies in the middle of the segment, which every window that fits
        # inside the segment covers (a 2 s window in a 3 s segment: [0.9 s, 2.1 s])
        k = len(plan.place)
        zone0, zone1 = int(n * SPEECH_ZONE[0]), int(n * SPEECH_ZONE[1])
        slot = (zone1 - zone0) // k
        for i, frac in enumerate(plan.place):
            room = max(slot - len(word), 0)
            start = zone0 + i * slot + int(frac * room)
            end = min(start + len(word), n)
            out[start:end] += word[: end - start]
    return np.clip(out, -1.0, 1.0).astype(np.float32)
