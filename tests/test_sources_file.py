"""File sources through PyAV on real mp4 clips, the thread hand-off and the PTS mapping."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import cast

import av
import numpy as np
import pytest
from media import clip_frame, make_clip

from models.spec import ModelSpec
from streamer.align.aligner import StreamAligner
from streamer.capture.process import ProcessSource
from streamer.clock import NODE_CLOCK
from streamer.config import StreamConfig
from streamer.errors import SourceEnded, SourceError, SourceOpenError
from streamer.frames import NS, AudioChunk, Item, VideoFrame, Window
from streamer.sources import Source, make_source, open_sources
from streamer.sources.av import AVSource
from streamer.sources.base import recv_batch
from streamer.sources.clockmap import PtsMapper
from streamer.sources.convert import AudioConverter
from streamer.sources.handoff import Handoff
from streamer.sources.handoff import _wake as handoff_wake
from streamer.sources.mic import MicSource
from streamer.sources.synthetic import SyntheticSource
from streamer.sources.webrtc import WebRTCHub
from streamer.testing import FakeClock

SPEC = ModelSpec()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("media") / "clip.mp4", 3.0, tone_hz=440)


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("media") / "short.mp4", 1.0)


def truncated_copy(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def url_of(path: Path) -> str:
    return f"file://{path}"


async def read_all(src: AVSource, limit: int = 100_000) -> list[Item]:
    items: list[Item] = []
    async with asyncio.timeout(20):
        while len(items) < limit:
            try:
                items.append(await src.recv())
            except SourceEnded:
                break
    return items


async def read_opened(src: AVSource) -> list[Item]:
    """Open ``src``, read it to its end, close it."""
    await src.open()
    try:
        return await read_all(src)
    finally:
        await src.close()


def split(items: list[Item]) -> tuple[list[VideoFrame], list[AudioChunk]]:
    return (
        [i for i in items if isinstance(i, VideoFrame)],
        [i for i in items if isinstance(i, AudioChunk)],
    )


# --- one container, both tracks -------------------------------------------------------


async def test_both_tracks_from_one_container(clip: Path) -> None:
    src = AVSource(url_of(clip), video=True, audio=True, spec=SPEC, realtime=False, stream="s1")
    assert src.modalities == {"video", "audio"}
    assert not src.live
    await src.open()
    try:
        t0 = time.monotonic()
        video, audio = split(await read_all(src))
        took = time.monotonic() - t0
    finally:
        await src.close()
    assert len(video) == 30
    assert all(f.image.shape == (64, 64, 3) and f.image.dtype == np.uint8 for f in video)
    assert all(c.samples.dtype == np.float32 and c.samples.ndim == 1 for c in audio)
    assert all(c.rate == 16_000 and c.stream == "s1" for c in audio)
    total = sum(len(c.samples) for c in audio)
    assert abs(total - 3 * 16_000) < 1024  # the whole clip, resampled 48k -> 16k
    assert took < 3.0, "unpaced replay runs faster than real time"
    assert src.dropped == 0  # blocking hand-off: backpressure, never drops


async def test_unpaced_audio_comes_in_contiguous_segments(clip: Path) -> None:
    src = AVSource(url_of(clip), video=False, audio=True, spec=SPEC, realtime=False)
    _, audio = split(await read_opened(src))
    assert all(len(c.samples) >= SPEC.segment_samples for c in audio[:-1])
    for a, b in zip(audio, audio[1:], strict=False):  # joined pieces stay back to back
        assert abs(b.pts_ns - a.end_ns) * 2 * a.rate <= NS
    # the same samples as the decoder's own pieces, one after another
    converter = AudioConverter(SPEC.audio_rate)
    pieces: list[np.ndarray] = []
    with av.open(str(clip)) as container:
        for frame in container.decode(audio=0):
            pieces += [p for _, p in converter.convert(frame)]
    pieces += [p for _, p in converter.convert(None)]
    assert np.array_equal(np.concatenate([c.samples for c in audio]), np.concatenate(pieces))


async def _windows_of(clip: Path, *, slot_frames: bool) -> tuple[list[Window], AVSource]:
    clock = FakeClock()
    src = AVSource(url_of(clip), video=True, audio=True, spec=SPEC, clock=clock,
                   realtime=False, slot_frames=slot_frames)  # fmt: skip
    aligner = StreamAligner(
        "", length_ns=2 * NS, hop_ns=NS // 2, max_delay_ns=NS, fps=SPEC.fps,
        audio_rate=SPEC.audio_rate, modalities=("video", "audio"),
    )  # fmt: skip
    for item in await read_opened(src):
        aligner.push(item)
    aligner.end("video")
    aligner.end("audio")
    return aligner.flush(), src


async def test_slot_frames_hand_over_only_what_the_aligner_keeps(clip: Path) -> None:
    every, _ = await _windows_of(clip, slot_frames=False)
    picked, src = await _windows_of(clip, slot_frames=True)
    # 30 frames at 10 fps into 250 ms slots: 12 or 13 slots, the rest beaten in theirs
    assert src.skipped >= 17
    assert len(every) == len(picked) > 4
    for a, b in zip(every, picked, strict=True):
        assert (a.start_ns, a.end_ns) == (b.start_ns, b.end_ns)
        assert [None if f is None else f.pts_ns for f in a.video] == [
            None if f is None else f.pts_ns for f in b.video
        ]
        assert all(
            fa is None or fb is not None and np.array_equal(fa.image, fb.image)
            for fa, fb in zip(a.video, b.video, strict=True)
        )
        assert np.array_equal(a.audio, b.audio) and np.array_equal(a.audio_mask, b.audio_mask)


async def test_conversion_content(clip: Path) -> None:
    src = AVSource(url_of(clip), video=True, audio=True, spec=SPEC, realtime=False)
    video, audio = split(await read_opened(src))
    # frame 0 matches the source picture scaled to 64x64 (RGB order, not BGR)
    expected = clip_frame(0, (320, 240), 10).astype(np.float32)
    got = video[0].image.astype(np.float32)
    for ch in range(3):
        assert abs(got[..., ch].mean() - expected[..., ch].mean()) < 12
    # column/row means follow the source's gradients: red runs right, green runs down
    ref_cols = expected[..., 0].mean(axis=0).reshape(64, 5).mean(axis=1)
    assert np.abs(got[..., 0].mean(axis=0) - ref_cols).mean() < 12
    assert got[-8:, :, 1].mean() > got[:8, :, 1].mean() + 100
    assert not np.array_equal(video[0].image, video[5].image)  # the bar moves
    # the tone is 440 Hz after resampling
    x = np.concatenate([c.samples for c in audio])[4000:20000]
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    peak_hz = np.argmax(spectrum) * 16_000 / len(x)
    assert abs(peak_hz - 440) < 5
    assert abs(np.sqrt(np.mean(x * x)) - 0.5 / np.sqrt(2)) < 0.05  # amplitude 0.5 kept


async def test_unpaced_timestamps_increase_and_span_the_clip(clip: Path) -> None:
    clock = FakeClock()
    src = AVSource(url_of(clip), video=True, audio=True, spec=SPEC, clock=clock, realtime=False)
    await src.open()
    try:
        video, audio = split(await read_all(src))
    finally:
        await src.close()
    vts = [f.pts_ns for f in video]
    assert all(b > a for a, b in zip(vts, vts[1:], strict=False))
    assert vts[0] == clock.now_ns()  # base at the first frame
    assert abs((vts[-1] - vts[0]) / NS - 2.9) < 0.01
    assert np.allclose(np.diff(vts) / NS, 0.1, atol=1e-3)
    ats = [c.pts_ns for c in audio]
    assert all(b > a for a, b in zip(ats, ats[1:], strict=False))
    # contiguous audio: each chunk starts where the previous ended
    gaps = [(b.pts_ns - a.end_ns) / NS for a, b in zip(audio, audio[1:], strict=False)]
    assert max(abs(g) for g in gaps) < 1e-3
    assert abs((audio[-1].end_ns - ats[0]) / NS - 3.0) < 0.05


async def test_realtime_pacing_keeps_timestamps_near_the_clock(clip: Path) -> None:
    src = AVSource(url_of(clip), video=True, audio=True, spec=SPEC, realtime=True)
    assert src.live
    await src.open()
    lags: list[float] = []
    n_video = 0
    try:
        t0 = time.monotonic()
        async with asyncio.timeout(10):
            while n_video < 12:
                item = await src.recv()
                due = item.end_ns if isinstance(item, AudioChunk) else item.pts_ns
                lags.append((NODE_CLOCK.now_ns() - due) / NS)
                n_video += isinstance(item, VideoFrame)
        took = time.monotonic() - t0
    finally:
        await src.close()
    assert min(lags) > -0.005, "never released before its time"
    assert max(lags) < 0.1, f"released late: {max(lags):.3f} s"
    assert 1.0 < took < 1.6  # 12 frames at 10 fps: ~1.1 s of media


async def test_loop_continues_with_increasing_timestamps(short_clip: Path) -> None:
    src = AVSource(url_of(short_clip), video=True, audio=True, spec=SPEC, realtime=False, loop=True)
    await src.open()
    try:
        items = await read_all(src, limit=400)  # ~3 passes of 10 frames + ~47 chunks
    finally:
        await src.close()
    video, audio = split(items)
    assert len(video) > 25
    steps = np.diff([f.pts_ns for f in video]) / NS
    # one frame period, also across the loop point, where the file's duration is that of
    # its longest track (AAC pads the audio by a few ms)
    assert np.all((steps >= 0.1 - 1e-6) & (steps < 0.11)), steps
    ats = [c.pts_ns for c in audio]
    assert all(b > a for a, b in zip(ats, ats[1:], strict=False))
    assert (audio[-1].end_ns - audio[0].pts_ns) / NS > 2.0


async def test_end_then_end_again(short_clip: Path) -> None:
    src = AVSource(url_of(short_clip), video=True, audio=False, spec=SPEC, realtime=False)
    assert src.modalities == {"video"}
    await src.open()
    items = await read_all(src)
    assert all(isinstance(i, VideoFrame) for i in items) and len(items) == 10
    with pytest.raises(SourceEnded):
        await src.recv()
    await src.close()
    await src.close()  # twice is fine


async def test_close_unblocks_an_unpaced_reader(clip: Path) -> None:
    src = AVSource(url_of(clip), video=True, audio=True, spec=SPEC, realtime=False, queue_size=2)
    await src.open()
    await src.recv()
    thread = src._thread
    assert thread is not None and thread.is_alive()  # blocked on a full hand-off
    await src.close()
    assert not thread.is_alive()


async def test_reopen_after_close(short_clip: Path) -> None:
    src = AVSource(url_of(short_clip), video=True, audio=False, spec=SPEC, realtime=False)
    for _ in range(2):
        await src.open()
        assert len(await read_all(src)) == 10
        await src.close()


# --- errors: one line, naming the URL ----------------------------------------------------


def assert_one_line(e: SourceError, url: str, problem: str) -> None:
    text = str(e)
    assert "\n" not in text
    assert text.startswith(f"{url}: ")
    assert problem in text, text


async def test_missing_file(tmp_path: Path) -> None:
    url = url_of(tmp_path / "nope.mp4")
    with pytest.raises(SourceOpenError) as e:
        await AVSource(url, video=True, audio=False, spec=SPEC).open()
    assert_one_line(e.value, url, "no such file")


async def test_garbage_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.mp4"
    path.write_bytes(bytes(range(256)) * 400)
    src = AVSource(url_of(path), video=True, audio=True, spec=SPEC)
    with pytest.raises(SourceOpenError) as e:
        await src.open()
    assert "\n" not in str(e.value) and str(e.value).startswith(url_of(path))
    await src.close()


async def test_truncated_file_ends_or_fails_cleanly(clip: Path, tmp_path: Path) -> None:
    path = truncated_copy(clip, tmp_path / "cut.mp4")
    src = AVSource(url_of(path), video=True, audio=True, spec=SPEC, realtime=False)
    try:
        await src.open()
        await read_all(src)
    except SourceError as e:
        assert "\n" not in str(e)
    finally:
        await src.close()


async def test_container_without_video(tmp_path: Path) -> None:
    path = make_clip(tmp_path / "audio_only.mp4", 1.0, video=False)
    url = url_of(path)
    with pytest.raises(SourceOpenError) as e:
        await AVSource(url, video=True, audio=True, spec=SPEC).open()
    assert str(e.value) == f"{url}: no video stream"
    # the same file is fine as an audio source
    src = AVSource(url, video=False, audio=True, spec=SPEC, realtime=False)
    await src.open()
    _, audio = split(await read_all(src))
    await src.close()
    assert abs(sum(len(c.samples) for c in audio) - 16_000) < 1024


# --- the hand-off -----------------------------------------------------------------------


async def test_handoff_live_drops_oldest_and_counts() -> None:
    h: Handoff[int] = Handoff(4, loop=asyncio.get_running_loop())
    for i in range(10):
        assert h.put(i)
    assert h.dropped == 6
    h.put_end()
    assert [await h.get() for _ in range(4)] == [6, 7, 8, 9]
    with pytest.raises(SourceEnded):
        await h.get()
    assert not h.put(11)  # after the end nothing more is queued


async def test_handoff_error_after_queued_items() -> None:
    h: Handoff[int] = Handoff(4, loop=asyncio.get_running_loop())
    h.put(1)
    h.put_error(SourceError("udp://x", "boom"))
    assert await h.get() == 1
    with pytest.raises(SourceError, match="boom"):
        await h.get()


async def test_handoff_blocking_mode_applies_backpressure() -> None:
    h: Handoff[int] = Handoff(2, loop=asyncio.get_running_loop(), blocking=True)
    produced: list[int] = []

    def producer() -> None:
        for i in range(50):
            h.put(i)
            produced.append(i)
        h.put_end()

    t = threading.Thread(target=producer)
    t.start()
    got: list[int] = []
    async with asyncio.timeout(5):
        while True:
            try:
                got.append(await h.get())
            except SourceEnded:
                break
            assert len(h) <= 2
    t.join(5)
    assert got == list(range(50)) and h.dropped == 0


async def test_handoff_get_nowait_takes_only_what_is_queued() -> None:
    h: Handoff[int] = Handoff(4, loop=asyncio.get_running_loop())
    assert h.get_nowait() is None
    h.put(1)
    h.put(2)
    h.put_end()
    assert [h.get_nowait(), h.get_nowait(), h.get_nowait()] == [1, 2, None]
    with pytest.raises(SourceEnded):  # the end is the next get()'s, never get_nowait()'s
        await h.get()


async def test_handoff_get_nowait_makes_room_for_a_blocked_producer() -> None:
    h: Handoff[int] = Handoff(1, loop=asyncio.get_running_loop(), blocking=True)
    h.put(0)
    t = threading.Thread(target=h.put, args=(1,))
    t.start()
    assert h.get_nowait() == 0
    await asyncio.to_thread(t.join, 5)
    assert not t.is_alive() and h.get_nowait() == 1


class _Queued:
    """A source over a hand-off, as AVSource and MicSource are."""

    def __init__(self, items: list[int]) -> None:
        self.handoff: Handoff[int] = Handoff(16, loop=asyncio.get_running_loop())
        for i in items:
            self.handoff.put(i)
        self.handoff.put_end()

    async def recv(self) -> int:
        return await self.handoff.get()

    def recv_nowait(self) -> int | None:
        return self.handoff.get_nowait()


class _Unqueued(_Queued):
    def recv_nowait(self) -> int | None:  # the protocol's default: no queue of its own
        return None


async def _batch(src: _Queued, limit: int) -> list[object]:
    return list(await recv_batch(cast(Source, src), limit))


async def test_recv_batch_takes_the_queued_items_up_to_the_limit() -> None:
    src = _Queued([1, 2, 3, 4, 5])
    assert await _batch(src, 3) == [1, 2, 3]
    assert await _batch(src, 3) == [4, 5]
    with pytest.raises(SourceEnded):
        await _batch(src, 3)
    plain = _Unqueued([1, 2])  # no recv_nowait: one item per call
    assert await _batch(plain, 3) == [1]
    assert await _batch(plain, 3) == [2]


async def test_a_file_read_in_batches_gives_what_recv_gives(clip: Path) -> None:
    one = AVSource(url_of(clip), video=True, audio=True, spec=SPEC, realtime=False)
    expected = await read_opened(one)
    batched = AVSource(url_of(clip), video=True, audio=True, spec=SPEC, realtime=False)
    await batched.open()
    got: list[Item] = []
    try:
        async with asyncio.timeout(20):
            while True:
                try:
                    got.extend(await recv_batch(batched, 16))
                except SourceEnded:
                    break
    finally:
        await batched.close()

    def shape(items: list[Item]) -> list[tuple[type, int]]:  # pts from the first item's
        return [(type(i), i.pts_ns - items[0].pts_ns) for i in items]

    assert len(expected) >= 40 and shape(got) == shape(expected)


async def test_handoff_close_unblocks_a_waiting_producer() -> None:
    h: Handoff[int] = Handoff(1, loop=asyncio.get_running_loop(), blocking=True)
    h.put(0)
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(h.put(1)))
    t.start()
    t.join(0.2)
    assert t.is_alive(), "the producer waits for space"
    h.close()
    await asyncio.to_thread(t.join, 5)
    assert result == [False]
    with pytest.raises(SourceEnded):
        await h.get()


async def test_handoff_close_wakes_a_waiting_consumer() -> None:
    h: Handoff[int] = Handoff(1, loop=asyncio.get_running_loop())
    getter = asyncio.create_task(h.get())
    await asyncio.sleep(0)  # let it start waiting
    h.close()
    with pytest.raises(SourceEnded):
        await asyncio.wait_for(getter, 5)


async def test_handoff_wakes_the_loop_once_per_wait() -> None:
    loop = asyncio.get_running_loop()
    calls = 0
    real = loop.call_soon_threadsafe

    def counting(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += args[0] is handoff_wake  # count only the hand-off's own wake-ups
        return real(*args, **kwargs)  # type: ignore[arg-type]

    h: Handoff[int] = Handoff(1000, loop=loop)
    loop.call_soon_threadsafe = counting  # type: ignore[method-assign,assignment]
    try:
        getter = asyncio.create_task(h.get())
        await asyncio.sleep(0)
        t = threading.Thread(target=lambda: [h.put(i) for i in range(200)])
        t.start()
        assert await asyncio.wait_for(getter, 5) == 0
        await asyncio.to_thread(t.join, 5)
    finally:
        del loop.call_soon_threadsafe
    assert calls == 1
    assert len(h) == 199


# --- PTS mapping ------------------------------------------------------------------------


def test_mapper_base_at_first_frame() -> None:
    clock = FakeClock()
    m = PtsMapper(clock)
    t0 = clock.now_ns()
    assert m.map(5.0) == t0
    clock.advance(10)  # a file is not resynced, however slow the reader
    assert m.map(6.0) == t0 + NS


def test_mapper_live_resyncs_on_jump() -> None:
    clock = FakeClock()
    m = PtsMapper(clock, live=True, resync_s=1.0)
    t0 = clock.now_ns()
    assert m.map(100.0) == t0
    clock.advance(0.5)
    assert m.map(100.4) == t0 + 4 * NS // 10  # a little late: kept
    clock.advance(0.5)
    assert m.map(3.0) == clock.now_ns()  # the sender restarted (far behind): resync
    assert m.resyncs == 1
    clock.advance(0.1)
    assert m.map(3.05) == clock.now_ns() - NS // 20
    assert m.map(50.0) == clock.now_ns()  # a forward jump: never in the future
    assert m.resyncs == 2


def test_mapper_live_burst_is_never_in_the_future() -> None:
    clock = FakeClock()
    m = PtsMapper(clock, live=True)
    t0 = clock.now_ns()
    # a second of media buffered while probing arrives within 10 ms
    stamps = []
    for i in range(10):
        stamps.append(m.map(i * 0.1))
        clock.advance(0.001)
    assert all(t <= t0 + i * NS // 1000 for i, t in enumerate(stamps))
    clock.advance(0.1)  # then real time: the newest data maps to its arrival
    assert m.map(1.0) == t0 + 9 * NS // 1000 + NS // 10
    assert m.resyncs == 0


def test_mapper_loop_offsets_by_duration() -> None:
    clock = FakeClock()
    m = PtsMapper(clock)
    t0 = clock.now_ns()
    for i in range(10):
        m.map(i * 0.1, 0.1)
    m.next_pass()
    assert m.map(0.0) == t0 + NS
    m.map(0.9, 0.1)
    m.next_pass()
    assert m.map(0.0) == t0 + 2 * NS


# --- the factory ------------------------------------------------------------------------


def test_factory_shares_one_container(clip: Path) -> None:
    cfg = StreamConfig(id="cam1", video=url_of(clip), audio=url_of(clip), realtime=False)
    sources = open_sources(cfg, spec=SPEC)
    assert len(sources) == 1
    src = sources[0]
    assert isinstance(src, AVSource)
    assert src.modalities == {"video", "audio"} and not src.live and src.stream == "cam1"


def test_factory_one_source_per_modality(clip: Path) -> None:
    cfg = StreamConfig(id="cam1", video=url_of(clip), audio="mic:default")
    video, audio = open_sources(cfg, spec=SPEC)
    assert isinstance(video, AVSource) and video.modalities == {"video"} and video.live
    assert isinstance(audio, MicSource) and audio.modalities == {"audio"}
    # under capture: process a microphone records in a capture process, as PyAV decodes
    _, audio = open_sources(cfg, spec=SPEC, capture="process")
    assert isinstance(audio, ProcessSource) and audio.modalities == {"audio"} and audio.live
    cfg = StreamConfig(id="s", video="synthetic:pattern", audio="synthetic:tone")
    v, a = open_sources(cfg, spec=SPEC)
    assert isinstance(v, SyntheticSource) and v.modalities == {"video"}
    assert isinstance(a, SyntheticSource) and a.modalities == {"audio"}
    cfg = StreamConfig(id="s", video="synthetic:", audio="synthetic:")
    (both,) = open_sources(cfg, spec=SPEC)
    assert both.modalities == {"video", "audio"}
    cfg = StreamConfig(id="s", video="udp://127.0.0.1:5000")
    (udp,) = open_sources(cfg, spec=SPEC)
    assert isinstance(udp, AVSource) and udp.live


def test_sources_meet_the_protocol(clip: Path) -> None:
    cfg = StreamConfig(id="s", video=url_of(clip), audio="synthetic:tone")
    sources = open_sources(cfg, spec=SPEC) + open_sources(
        StreamConfig(id="m", audio="mic:default"), spec=SPEC
    )
    for src in sources:
        assert isinstance(src, Source)
        assert src.dropped == 0 and src.url and src.modalities


def test_factory_webrtc_needs_the_http_server() -> None:
    cfg = StreamConfig(id="s", text=["a/b"])
    with pytest.raises(SourceOpenError, match="webrtc: .*needs the HTTP server"):
        make_source("webrtc", frozenset({"video"}), stream=cfg, spec=SPEC, clock=NODE_CLOCK)
    hub = WebRTCHub()
    src = make_source(
        "webrtc", frozenset({"video"}), stream=cfg, spec=SPEC, clock=NODE_CLOCK, webrtc=hub
    )
    assert hub.sources["s"] is src and src.live and src.modalities == {"video"}
