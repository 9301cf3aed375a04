"""Synthetic sources: deterministic content, wall-clock pacing, URL errors, layering."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from models.spec import ModelSpec
from streamer.clock import NODE_CLOCK
from streamer.errors import SourceOpenError
from streamer.frames import NS, AudioChunk, Item, VideoFrame
from streamer.sources.synthetic import SyntheticSource
from streamer.testing import FakeClock

SPEC = ModelSpec()


async def take(src: SyntheticSource, n: int) -> list[Item]:
    async with asyncio.timeout(10):
        return [await src.recv() for _ in range(n)]


async def test_same_seed_same_pixels_and_samples() -> None:
    url = "synthetic:?fps=50&size=160x120&seed=3&freq=500"
    runs = []
    for _ in range(2):
        src = SyntheticSource(url, video=True, audio=True, spec=SPEC, stream="s")
        await src.open()
        runs.append(await take(src, 12))
        await src.close()
    a, b = runs
    assert [type(i) for i in a] == [type(i) for i in b]
    for x, y in zip(a, b, strict=True):
        if isinstance(x, VideoFrame):
            assert isinstance(y, VideoFrame) and np.array_equal(x.image, y.image)
            assert x.image.shape == (64, 64, 3) and x.image.dtype == np.uint8
        else:
            assert isinstance(x, AudioChunk) and isinstance(y, AudioChunk)
            assert np.array_equal(x.samples, y.samples)
            assert x.samples.dtype == np.float32 and len(x.samples) == 320 and x.rate == 16_000
    frames = [i for i in a if isinstance(i, VideoFrame)]
    assert not np.array_equal(frames[0].image, frames[1].image)  # it moves

    other = SyntheticSource(url.replace("seed=3", "seed=4"), video=True, audio=False, spec=SPEC)
    await other.open()
    (first,) = await take(other, 1)
    assert isinstance(first, VideoFrame) and not np.array_equal(first.image, frames[0].image)


async def test_tone_is_continuous_and_at_its_frequency() -> None:
    src = SyntheticSource("synthetic:tone?freq=1000", video=False, audio=True, spec=SPEC)
    await src.open()
    chunks = await take(src, 10)  # 200 ms
    x = np.concatenate([c.samples for c in chunks if isinstance(c, AudioChunk)])
    peak = np.argmax(np.abs(np.fft.rfft(x))) * 16_000 / len(x)
    assert peak == pytest.approx(1000, abs=6)
    assert np.abs(np.diff(x)).max() < 2 * np.pi * 1000 / 16_000 * 0.5 + 1e-3  # no seams
    ts = [c.pts_ns for c in chunks]
    assert np.all(np.diff(ts) == 20_000_000)


async def test_paced_by_the_wall_clock() -> None:
    src = SyntheticSource("synthetic:?fps=20", video=True, audio=True, spec=SPEC)
    await src.open()
    t0 = NODE_CLOCK.now_ns()
    lateness = []
    items: list[Item] = []
    async with asyncio.timeout(5):
        while NODE_CLOCK.now_ns() - t0 < NS:
            item = await src.recv()
            due = item.end_ns if isinstance(item, AudioChunk) else item.pts_ns
            lateness.append((NODE_CLOCK.now_ns() - due) / NS)
            items.append(item)
    assert min(lateness) >= 0, "never handed out before its time"
    assert max(lateness) < 0.05
    video = [i for i in items if isinstance(i, VideoFrame)]
    audio = [i for i in items if isinstance(i, AudioChunk)]
    assert 19 <= len(video) <= 22 and 48 <= len(audio) <= 51
    assert np.allclose(np.diff([f.pts_ns for f in video]) / NS, 0.05, atol=1e-6)


async def test_a_consumer_far_behind_skips_and_counts() -> None:
    clock = FakeClock()
    src = SyntheticSource("synthetic:pattern?fps=10", video=True, audio=False, spec=SPEC,
                          clock=clock)  # fmt: skip
    await src.open()
    clock.advance(5.0)
    item = await src.recv()
    assert src.dropped >= 39
    assert clock.now_ns() - item.pts_ns <= NS


@pytest.mark.parametrize(
    ("url", "video", "audio", "problem"),
    [
        ("synthetic:pattern", True, True, "synthetic:pattern has no audio"),
        ("synthetic:tone", True, False, "synthetic:tone has no video"),
        ("synthetic:nope", True, False, "unknown synthetic source 'nope'"),
        ("synthetic:?colour=red", True, False, "unknown option 'colour'"),
        ("synthetic:?fps=0", True, False, "fps must be a positive number, got '0'"),
        ("synthetic:?size=big", True, False, "size must be WIDTHxHEIGHT, got 'big'"),
    ],
)
def test_url_errors(url: str, video: bool, audio: bool, problem: str) -> None:
    with pytest.raises(SourceOpenError) as e:
        SyntheticSource(url, video=video, audio=audio, spec=SPEC)
    assert str(e.value).startswith(f"{url}: {problem}")


def test_sources_import_neither_the_aligner_nor_the_data_sets() -> None:
    """Sources share the slot rule with the aligner through streamer.timebase and find
    synthetic generators by name (streamer.generators), importing neither side."""
    code = (
        "import importlib, pkgutil, sys, streamer.sources as s\n"
        "for m in pkgutil.iter_modules(s.__path__):\n"
        "    importlib.import_module('streamer.sources.' + m.name)\n"
        "print(*(m for m in sys.modules if m.startswith(('streamer.align', 'streamer.datasets'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == []
