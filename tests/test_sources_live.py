"""Live sources for real: UDP MPEG-TS from an ffmpeg sender, V4L2 options, and a microphone
recorded through a PulseAudio null sink (what ``paplay`` plays is what the mic hears).
"""

from __future__ import annotations

import asyncio
import ctypes.util
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import IN_CI, REPO, PulseAudio, free_port
from media import chirp, start_sender, write_wav

from models.spec import ModelSpec
from streamer.clock import NODE_CLOCK
from streamer.errors import SourceError, SourceOpenError
from streamer.frames import NS, AudioChunk, Item, VideoFrame
from streamer.sources.av import AVSource
from streamer.sources.avurls import network_options, v4l2_options
from streamer.sources.mic import SampleClock
from streamer.testing import FakeClock

SPEC = ModelSpec()

# --- UDP MPEG-TS ----------------------------------------------------------------------


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def udp_sender() -> Iterator[int]:
    port = free_port()
    proc = start_sender(port)
    try:
        yield port
    finally:
        stop(proc)


async def test_udp_mpegts_frames_and_audio_arrive(udp_sender: int) -> None:
    url = f"udp://127.0.0.1:{udp_sender}"
    src = AVSource(url, video=True, audio=True, spec=SPEC, open_timeout=5.0, read_timeout=3.0)
    assert src.live
    await src.open()
    items: list[Item] = []
    try:
        async with asyncio.timeout(15):
            while sum(isinstance(i, VideoFrame) for i in items) < 25 or (
                sum(isinstance(i, AudioChunk) for i in items) < 30
            ):
                item = await src.recv()
                items.append(item)
                # live mapping: stamped near the moment it arrived, never in the future
                assert 0 <= NODE_CLOCK.now_ns() - item.pts_ns < 1.5 * NS
    finally:
        await src.close()
    video = [i for i in items if isinstance(i, VideoFrame)]
    audio = [i for i in items if isinstance(i, AudioChunk)]
    assert all(f.image.shape == (64, 64, 3) for f in video)
    for track in (video, audio):
        ts = [i.pts_ns for i in track]
        assert all(b > a for a, b in zip(ts, ts[1:], strict=False))
    # the packets buffered while the stream was probed arrive in a burst and are stamped
    # compressed (never in the future); after it, frames are one period apart (give or
    # take the arrival jitter that the earliest-arrival mapping follows)
    steps = np.diff([f.pts_ns for f in video]) / NS
    assert abs(np.median(steps[-8:]) - 0.1) < 0.01, steps
    assert abs((video[-1].pts_ns - video[-9].pts_ns) / NS - 0.8) < 0.1, steps
    assert all(c.rate == 16_000 for c in audio)


async def test_udp_sender_that_stops_is_a_source_error() -> None:
    port = free_port()
    proc = start_sender(port)
    url = f"udp://127.0.0.1:{port}"
    src = AVSource(url, video=True, audio=False, spec=SPEC, open_timeout=5.0, read_timeout=1.0)
    try:
        await src.open()
        await asyncio.wait_for(src.recv(), 10)
        await asyncio.to_thread(stop, proc)
        t0 = time.monotonic()
        with pytest.raises(SourceError) as e:
            async with asyncio.timeout(10):
                while True:
                    await src.recv()
        assert "\n" not in str(e.value) and str(e.value).startswith(url)
        assert time.monotonic() - t0 < 6
    finally:
        stop(proc)
        await src.close()


async def test_udp_without_sender_fails_to_open_in_bounded_time() -> None:
    url = f"udp://127.0.0.1:{free_port()}"
    src = AVSource(url, video=True, audio=False, spec=SPEC, open_timeout=1.0)
    t0 = time.monotonic()
    with pytest.raises(SourceOpenError) as e:
        await src.open()
    took = time.monotonic() - t0
    await src.close()
    assert str(e.value) == f"{url}: no data within 1.0 s"
    assert took < 3.5


def test_network_options() -> None:
    target, fmt, opts = network_options("udp://127.0.0.1:5000?pkt_size=1316", 5.0)
    assert (target, fmt) == ("udp://127.0.0.1:5000?pkt_size=1316", "mpegts")
    assert opts == {"timeout": "5000000", "fifo_size": "1000000", "overrun_nonfatal": "1"}
    target, fmt, _ = network_options("udp://127.0.0.1:5000?format=h264&pkt_size=1316", 5.0)
    assert (target, fmt) == ("udp://127.0.0.1:5000?pkt_size=1316", "h264")
    target, fmt, opts = network_options("rtsp://cam.local/live?x=1", 2.5)
    assert (target, fmt) == ("rtsp://cam.local/live?x=1", None)
    assert opts == {"timeout": "2500000", "rtsp_transport": "tcp"}  # microseconds


async def test_rtsp_refused_fails_to_open_quickly() -> None:
    url = f"rtsp://127.0.0.1:{free_port()}/live"
    src = AVSource(url, video=True, audio=False, spec=SPEC, open_timeout=2.0)
    t0 = time.monotonic()
    with pytest.raises(SourceOpenError) as e:
        await src.open()
    await src.close()
    assert str(e.value).startswith(f"{url}: ") and "\n" not in str(e.value)
    assert time.monotonic() - t0 < 4


# --- V4L2 -----------------------------------------------------------------------------


def test_v4l2_options() -> None:
    assert v4l2_options("v4l2:///dev/video0") == ("/dev/video0", {})
    device, opts = v4l2_options("v4l2:///dev/video2?size=640x480&fps=30&input_format=mjpeg")
    assert device == "/dev/video2"
    assert opts == {"video_size": "640x480", "framerate": "30", "input_format": "mjpeg"}


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("v4l2:///dev/video0?exposure=3", "unknown option 'exposure' (known: size, fps, "),
        ("v4l2:///dev/video0?size=640", "size must be WIDTHxHEIGHT, got '640'"),
        ("v4l2:///dev/video0?fps=fast", "fps must be a positive number, got 'fast'"),
        ("v4l2:///dev/video0?input_format=", "input_format needs a value"),
        ("v4l2://video0", "expected v4l2:///dev/videoN"),
    ],
)
def test_v4l2_option_errors(url: str, problem: str) -> None:
    with pytest.raises(SourceOpenError) as e:
        v4l2_options(url)
    assert str(e.value).startswith(f"{url}: {problem}")


@pytest.mark.skipif(Path("/dev/video42").exists(), reason="this machine has a /dev/video42")
async def test_v4l2_absent_device() -> None:
    url = "v4l2:///dev/video42?size=640x480"
    src = AVSource(url, video=True, audio=False, spec=SPEC)
    with pytest.raises(SourceOpenError) as e:
        await src.open()
    await src.close()
    assert str(e.value) == f"{url}: no such device"


# --- a microphone through a PulseAudio null sink -----------------------------------------


def test_mic_sample_clock_counts_samples_and_resyncs_forward_only() -> None:
    clock = FakeClock()
    stamps = SampleClock(clock, 16_000, resync_s=0.2)
    t0 = clock.now_ns()
    assert stamps.stamp(320) == t0 - 20_000_000  # the first block ends now
    # callbacks come with jitter; the stamps follow the sample count, not the callbacks
    for i, jitter in enumerate([0.03, 0.0, 0.01, 0.04]):
        clock.advance(0.02 + (jitter - (0.03 if i == 0 else 0)))
        assert stamps.stamp(320) == t0 + i * 20_000_000
    assert stamps.resyncs == 0
    # a stall: 1 s without callbacks, then the next block resyncs to the clock
    clock.advance(1.0)
    assert stamps.stamp(320) == clock.now_ns() - 20_000_000
    assert stamps.resyncs == 1
    # a burst far ahead of the clock never goes backwards
    last = clock.now_ns() - 20_000_000
    for _ in range(30):
        t = stamps.stamp(320)
        assert t >= last + 20_000_000
        last = t


RECORDER = r"""
import asyncio, sys, threading
import numpy as np
from models.spec import ModelSpec
from streamer.clock import NODE_CLOCK
from streamer.config import StreamConfig
from streamer.errors import SourceOpenError
from streamer.sources.factory import make_source
from streamer.align.aligner import StreamAligner
from streamer.frames import NS

def mic(url, capture):  # a MicSource, or under capture: process a ProcessSource over one
    return make_source(url, frozenset({"audio"}), stream=StreamConfig(id="rec", audio=url),
                       spec=ModelSpec(), clock=NODE_CLOCK, capture=capture)

async def main(out, post_roll_s, capture):
    try:
        await mic("mic:no-such-mic", capture).open()
    except SourceOpenError as e:
        print("ERROR " + str(e), flush=True)
    src = mic("mic:default", capture)
    await src.open()
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    chunks = [await src.recv()]
    print("READY", flush=True)
    post = 0
    while post < post_roll_s * 16000:  # after "stop": more samples, counted, not timed
        chunk = await src.recv()
        chunks.append(chunk)
        if stop.is_set():
            post += len(chunk.samples)
    await src.close()
    # through the aligner, as a run would: 2 s windows every 0.5 s
    aligner = StreamAligner("rec", length_ns=2 * NS, hop_ns=NS // 2, max_delay_ns=NS // 2,
                            fps=4, audio_rate=16000, modalities=["audio"])
    for c in chunks:
        aligner.push(c)
    aligner.end("audio")
    windows = aligner.flush()
    np.save(out + ".win.npy", np.stack([w.audio for w in windows]))
    np.save(out + ".winmask.npy", np.stack([w.audio_mask for w in windows]))
    np.save(out + ".samples.npy", np.concatenate([c.samples for c in chunks]))
    np.save(out + ".pts.npy", np.array([c.pts_ns for c in chunks], dtype=np.int64))
    np.save(out + ".len.npy", np.array([len(c.samples) for c in chunks], dtype=np.int64))
    print("DONE", src.dropped, flush=True)

asyncio.run(main(sys.argv[1], float(sys.argv[2]), sys.argv[3]))
"""


@pytest.fixture
def pulse(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A private PulseAudio with a null sink ``vsink`` whose monitor is the default source."""
    daemon = PulseAudio(tmp_path / "pulse-run")
    daemon.start()
    try:
        yield daemon.env
    finally:
        daemon.stop()


@pytest.mark.parametrize("capture", ["thread", "process"])
def test_microphone_hears_what_paplay_plays(
    pulse: dict[str, str], tmp_path: Path, capture: str
) -> None:
    pytest.importorskip("sounddevice")  # the module itself only; PortAudio loads in the child
    if ctypes.util.find_library("portaudio") is None:
        if IN_CI:
            pytest.fail("libportaudio2 is not installed (CI must install it in .ci/run)")
        pytest.skip("libportaudio2 is not installed here (outside CI, so skipped)")
    signal = chirp(0.5, 48_000)
    wav = write_wav(tmp_path / "chirp.wav", signal, 48_000)
    out = str(tmp_path / "rec")
    # a child process, so that PortAudio enumerates devices with PULSE_SERVER already set
    with subprocess.Popen(
        [sys.executable, "-c", RECORDER, out, "2.5", capture],
        cwd=REPO,
        env=pulse,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as rec:
        assert rec.stdin is not None and rec.stdout is not None and rec.stderr is not None
        try:
            error = rec.stdout.readline().strip()
            ready = rec.stdout.readline().strip()
            if ready != "READY":
                rec.kill()
                _, err = rec.communicate(timeout=10)
                pytest.fail(f"recorder failed: {error} {ready} {err[-1500:]}")
            subprocess.run(
                [shutil.which("paplay") or "paplay", "--device=vsink", str(wav)],
                env=pulse,
                check=True,
                timeout=15,
            )
            rec.stdin.close()  # "stop": the recorder keeps 2.5 s more of samples, then exits
            done = rec.stdout.readline().strip()
            assert rec.wait(timeout=15) == 0, rec.stderr.read()
        finally:
            if rec.poll() is None:
                rec.kill()
                rec.wait()
    assert error.startswith("ERROR mic:no-such-mic: no input device matching 'no-such-mic' ")
    assert "available: " in error and "default" in error
    assert done.startswith("DONE")

    x = np.load(out + ".samples.npy")
    pts = np.load(out + ".pts.npy")
    lengths = np.load(out + ".len.npy")
    assert x.dtype == np.float32
    assert np.all(np.diff(pts) > 0)
    assert np.all(lengths == 320)  # 20 ms blocks at 16 kHz

    # find the chirp by normalised cross-correlation (prebuffering: not by wall clock)
    ref = chirp(0.5, 16_000)
    corr = np.correlate(x, ref, mode="valid")
    energy = np.sqrt(np.convolve(x * x, np.ones(len(ref)), mode="valid"))
    ncc = corr / (energy * np.linalg.norm(ref) + 1e-9)
    at = int(np.argmax(ncc))
    assert ncc[at] > 0.9, f"chirp not found (best correlation {ncc[at]:.2f})"
    heard = x[at : at + len(ref)]
    assert abs(np.abs(heard).max() - 0.5) < 0.1  # played at amplitude 0.5
    quiet = np.concatenate([x[: max(at - 1600, 0)], x[at + len(ref) + 1600 :]])
    assert np.abs(quiet).max() < 0.01  # silence around it

    # and in the windows the aligner cut: some window holds the whole chirp, unmasked
    windows, masks = np.load(out + ".win.npy"), np.load(out + ".winmask.npy")
    assert windows.shape[1] == 32_000 and masks.all(axis=1).sum() >= 1
    best = 0.0
    for w in windows:
        c = np.correlate(w, ref, mode="valid")
        e = np.sqrt(np.convolve(w * w, np.ones(len(ref)), mode="valid"))
        best = max(best, float((c / (e * np.linalg.norm(ref) + 1e-9)).max()))
    assert best > 0.9, f"chirp not found in any window (best correlation {best:.2f})"
