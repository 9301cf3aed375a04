"""``overhead_ratio``: what the pipeline costs beyond decoding and the model.

Process CPU time of a whole node (sources, aligner, batching, publishing to Mosquitto)
over AV-digits clips read unpaced, divided by the CPU time of decoding the same clips
alone plus the CPU time of the model on the same windows alone (the same batch size).
The clips are decoded alone as the node decodes them: all at once, one demuxer thread
each. (On a small VM, four demuxers sharing two cores spend more CPU time than the same
decoders one after another; that is the cost of decoding streams side by side, which a
node cannot avoid, not the pipeline's.)
1.0 would be a free pipeline; the target is <= 1.15. Each of the three is measured
``repeats`` times, interleaved, and its least CPU time taken: on a shared (virtual)
machine one measurement of a few seconds varies by 20 % or more.

``capture``: where the node decodes (``capture: thread | process``). CPU time is the
process's own, that of its children that ended meanwhile (``RUSAGE_CHILDREN``), and that
of the capture fork server with the capture processes it forked and reaped (they are
its children, not ours: read from ``/proc``), so a node whose decoders run in capture
processes is charged for every one of them. The fork server's own start (once per
process, about 0.3 s of CPU, like loading the model) falls in the first run, and each
figure is the least of its runs. With ``process`` the decoding alone is measured twice:
in threads, as above (``overhead_ratio``), and in capture processes alone
(``overhead_ratio_same_capture``: what the pipeline adds to decoding done the same way).

The node's windows may differ from the model-alone ones by one per clip: a file is mapped
onto the clock from the moment its first frame is read, so where its ends fall on the
window grid changes from run to run (a clip of 6.016 s is covered by 16 windows of
2 s / 0.5 s at 97 % of phases, by 17 at the rest). The model-alone term is therefore
scaled to the windows the node published (``model_cpu_s`` is per ``published``).
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from pathlib import Path

from models.windows import WindowInputs
from streamer.align.aligner import StreamAligner
from streamer.app.node import Node
from streamer.capture.process import ProcessSource
from streamer.config import Config, parse_config
from streamer.datasets.avdigits.clips import write_clip
from streamer.datasets.avdigits.settings import DEFAULT
from streamer.errors import SourceEnded
from streamer.frames import Item, Window
from streamer.inference.model import LoadedModel
from streamer.inference.runner import window_inputs
from streamer.sources.av import AVSource


def make_clips(directory: Path, clips: int, segments: int) -> list[Path]:
    out = []
    for i in range(clips):
        mp4 = directory / f"clip{i}.mp4"
        write_clip(mp4, directory / f"clip{i}.jsonl", seed=i, split="test", first=0,
                   segments=segments, settings=DEFAULT)  # fmt: skip
        out.append(mp4)
    return out


def cpu_s() -> float:
    """CPU seconds of this process, of its children that ended (and were waited for),
    and of the capture fork server with the capture processes it reaped."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime + fork_server_cpu_s()


def fork_server_cpu_s() -> float:
    """utime + stime + cutime + cstime of this process's ``multiprocessing`` fork server
    (``/proc``), 0.0 while there is none."""
    ticks = 0
    for task in Path("/proc/self/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for pid in children:
            try:
                if b"multiprocessing.forkserver" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                    continue
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # it ended meanwhile: then RUSAGE_CHILDREN has it
                continue
            ticks += sum(int(f) for f in fields[11:15])  # stat fields 14-17
    return ticks / os.sysconf("SC_CLK_TCK")


def _config(port: int, files: list[Path], capture: str) -> Config:
    return parse_config({
        "node": "bench-overhead",
        "mqtt": {"url": f"mqtt://127.0.0.1:{port}"},
        "log_level": "warning",
        "capture": capture,
        "streams": [
            {"id": f"c{i}", "video": f"file://{f}", "audio": f"file://{f}", "realtime": False,
             "text": []}
            for i, f in enumerate(files)
        ],
    })  # fmt: skip


async def _decode(path: Path, loaded: LoadedModel, process: bool = False) -> list[Item]:
    kind = ProcessSource if process else AVSource
    src = kind(f"file://{path}", video=True, audio=True, spec=loaded.spec, realtime=False,
               stream=path.stem, slot_frames=True)  # fmt: skip
    items: list[Item] = []
    await src.open()
    try:
        while True:
            try:
                items.append(await src.recv())
            except SourceEnded:
                return items
    finally:
        await src.close()


def _windows(items: list[Item], stream: str, cfg: Config, loaded: LoadedModel) -> list[Window]:
    w, spec = cfg.window, loaded.spec
    aligner = StreamAligner(
        stream, length_ns=w.length_ns, hop_ns=w.hop_ns, max_delay_ns=w.max_delay_ns,
        fps=spec.fps, audio_rate=spec.audio_rate, modalities=("video", "audio"),
    )  # fmt: skip
    out: list[Window] = []
    for it in items:  # windows are taken as the watermarks pass them, as the node does:
        aligner.push(it)  # the aligner buffers at most max_buffer_s of a longer clip
        out.extend(aligner.poll(0))
    aligner.end("video")
    aligner.end("audio")
    return out + aligner.flush()


async def overhead_ratio(
    port: int, loaded: LoadedModel, directory: Path, *, clips: int = 4, segments: int = 8,
    repeats: int = 3, capture: str = "thread",
) -> dict[str, float]:  # fmt: skip
    files = make_clips(directory, clips, segments)
    cfg = _config(port, files, capture)
    batch = cfg.model.max_batch
    decode: list[float] = []
    decode_same: list[float] = []  # capture: process, decoding alone in capture processes
    model: list[float] = []
    full: list[float] = []
    inputs: list[WindowInputs] = []
    published: list[int] = []
    for _ in range(repeats):
        # decoding alone, every clip at once as in the node (the demuxer threads count:
        # process time covers every thread)
        t0 = cpu_s()
        decoded = await asyncio.gather(*(_decode(f, loaded) for f in files))
        decode.append(cpu_s() - t0)
        if capture == "process":
            t0 = cpu_s()
            await asyncio.gather(*(_decode(f, loaded, process=True) for f in files))
            decode_same.append(cpu_s() - t0)
        if not inputs:  # the model alone, on the same windows, batched as the runner would
            windows = [w for f, items in zip(files, decoded, strict=True)
                       for w in _windows(items, f.stem, cfg, loaded)]  # fmt: skip
            inputs = [window_inputs(w, loaded.spec) for w in windows]
            loaded.make_fusion()(inputs[:batch])  # warm-up (lazy init), as a running node had
        fusion = loaded.make_fusion()
        t0 = time.process_time()
        for i in range(0, len(inputs), batch):
            fusion(inputs[i : i + batch])
        model.append(time.process_time() - t0)
        # the whole node over the same files
        node = Node(cfg, loaded=loaded)
        t0 = cpu_s()
        await node.run()
        full.append(cpu_s() - t0)
        published.append(node.published)
    best = full.index(min(full))
    model_s = min(model) * published[best] / len(inputs)  # the model on as many windows
    out = {
        "overhead_ratio": min(full) / (min(decode) + model_s),
        "decode_cpu_s": min(decode), "model_cpu_s": model_s, "run_cpu_s": min(full),
        "windows": float(len(inputs)), "published": float(published[best]),
        "clips": float(clips),
    }  # fmt: skip
    if decode_same:
        out["decode_same_capture_cpu_s"] = min(decode_same)
        out["overhead_ratio_same_capture"] = min(full) / (min(decode_same) + model_s)
    return out
