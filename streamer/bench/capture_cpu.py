"""``python -m streamer.bench.capture_cpu``: CPU per frame in the node process, thread vs
process capture, for one unpaced 640x480 30 fps file (every frame converted).

Prints, per mode: frames/s, the node's CPU ms per frame (``time.process_time``) and the
capture process's (the fork server's reaped children, :func:`fork_server_cpu_s`, counted
once it has exited). ``process`` runs twice: the first run also starts the fork server
(once per node process), the second is what every later open costs.
"""

from __future__ import annotations

import asyncio
import resource
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from models.spec import ModelSpec
from streamer.bench.overhead import fork_server_cpu_s
from streamer.capture.process import ProcessSource
from streamer.errors import SourceEnded
from streamer.sources.av import AVSource
from streamer.sources.base import Source, recv_batch


def make_file(path: Path, seconds: int, fps: int = 30) -> None:
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = 640, 480, "yuv420p"
        vs.options = {"preset": "ultrafast"}
        rng = np.random.default_rng(0)
        base = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
        for i in range(seconds * fps):
            f = av.VideoFrame.from_ndarray(np.roll(base, i * 4, axis=1), format="rgb24")
            f.pts, f.time_base = i, Fraction(1, fps)
            out.mux(vs.encode(f))
        out.mux(vs.encode(None))


async def run(src: Source) -> int:
    await src.open()
    n = 0
    try:
        while True:
            n += len(await recv_batch(src, 32))
    except SourceEnded:
        return n
    finally:
        await src.close()


def children_cpu_s() -> float:
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return kids.ru_utime + kids.ru_stime + fork_server_cpu_s()


def main() -> None:
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    spec = ModelSpec(image_size=224)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "bench.mp4"
        make_file(path, seconds)
        for mode in ("thread", "process (first)", "process"):
            kw = dict(video=True, audio=False, spec=spec, realtime=False)
            src: Source = (AVSource if mode == "thread" else ProcessSource)(f"file://{path}", **kw)  # type: ignore[arg-type]
            c0 = children_cpu_s()
            p0, w0 = time.process_time(), time.perf_counter()
            n = asyncio.run(run(src))
            p1, w1 = time.process_time(), time.perf_counter()
            child = children_cpu_s() - c0
            print(
                f"{mode:16s} frames={n} fps={n / (w1 - w0):.0f} "
                f"node_cpu_ms_per_frame={(p1 - p0) * 1e3 / n:.3f} "
                f"child_cpu_ms_per_frame={child * 1e3 / n:.3f} "
                f"total_cpu_ms_per_frame={(p1 - p0 + child) * 1e3 / n:.3f}"
            )


if __name__ == "__main__":
    main()
