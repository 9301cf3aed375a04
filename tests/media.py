"""Test media made with PyAV alone: mp4 clips (H.264 + AAC) and wav files.

The video is a deterministic moving bar over a gradient; the audio is a sine tone.
"""

from __future__ import annotations

import subprocess
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
from conftest import require_tool


def clip_frame(i: int, size: tuple[int, int], fps: int) -> npt.NDArray[np.uint8]:
    """Frame ``i`` of a clip: a horizontal gradient with a white bar moving right."""
    w, h = size
    x = np.linspace(0, 255, w, dtype=np.float32)
    img = np.empty((h, w, 3), dtype=np.uint8)
    img[..., 0] = x.astype(np.uint8)[None, :]
    img[..., 1] = np.linspace(0, 255, h, dtype=np.float32).astype(np.uint8)[:, None]
    img[..., 2] = 96
    bar = max(w // 10, 2)
    x0 = (i * w // max(fps, 1) // 2) % w
    img[:, x0 : x0 + bar] = 255
    return img


def make_clip(
    path: str | Path,
    seconds: float,
    *,
    size: tuple[int, int] = (320, 240),
    fps: int = 10,
    audio: bool = True,
    video: bool = True,
    tone_hz: float = 440.0,
    rate: int = 48000,
) -> Path:
    """Write an mp4 of ``seconds`` with an H.264 video track and/or an AAC tone track."""
    path = Path(path)
    with av.open(str(path), mode="w") as out:
        vs = None
        if video:
            vs = out.add_stream("libx264", rate=fps)
            vs.width, vs.height = size
            vs.pix_fmt = "yuv420p"
            vs.options = {"preset": "ultrafast", "g": str(fps)}
        aus = None
        if audio:
            aus = out.add_stream("aac", rate=rate)
            aus.layout = "mono"
        n_frames = round(seconds * fps)
        n_samples = round(seconds * rate)
        # interleave by time so the muxer does not buffer one track
        vi = 0
        ai = 0
        block = 1024
        while (vs is not None and vi < n_frames) or (aus is not None and ai < n_samples):
            v_t = vi / fps if vs is not None and vi < n_frames else float("inf")
            a_t = ai / rate if aus is not None and ai < n_samples else float("inf")
            if v_t <= a_t and vs is not None:
                frame = av.VideoFrame.from_ndarray(clip_frame(vi, size, fps), format="rgb24")
                frame.pts = vi
                frame.time_base = Fraction(1, fps)
                out.mux(vs.encode(frame))
                vi += 1
            elif aus is not None:
                n = min(block, n_samples - ai)
                t = (ai + np.arange(n)) / rate
                samples = (0.5 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)
                af = av.AudioFrame.from_ndarray(samples[None, :], format="fltp", layout="mono")
                af.sample_rate = rate
                af.pts = ai
                af.time_base = Fraction(1, rate)
                out.mux(aus.encode(af))
                ai += n
        if vs is not None:
            out.mux(vs.encode(None))
        if aus is not None:
            out.mux(aus.encode(None))
    return path


def write_wav(path: str | Path, samples: npt.NDArray[np.float32], rate: int) -> Path:
    """Write mono float samples in [-1, 1] as 16-bit PCM wav."""
    path = Path(path)
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def chirp(
    seconds: float, rate: int, f0: float = 300.0, f1: float = 3000.0
) -> npt.NDArray[np.float32]:
    """A linear chirp from f0 to f1 Hz, with a short fade in/out; easy to find by correlation."""
    t = np.arange(round(seconds * rate)) / rate
    k = (f1 - f0) / seconds
    x = 0.5 * np.sin(2 * np.pi * (f0 * t + 0.5 * k * t * t))
    fade = min(len(t) // 10, rate // 100)
    env = np.ones_like(x)
    env[:fade] = np.linspace(0, 1, fade)
    env[-fade:] = np.linspace(1, 0, fade)
    return (x * env).astype(np.float32)


def start_sender(port: int, seconds: float = 30.0) -> subprocess.Popen[bytes]:
    """A live MPEG-TS stream (H.264 + AAC, 10 fps) sent by ffmpeg to 127.0.0.1:port."""
    ffmpeg = require_tool("ffmpeg")
    cmd = [
        ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
        "-f", "lavfi", "-i", "testsrc=size=320x240:rate=10",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-t", str(seconds),
        "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "10",
        "-c:a", "aac",
        "-f", "mpegts", f"udp://127.0.0.1:{port}?pkt_size=1316",
    ]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
