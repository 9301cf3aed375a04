"""Sources heal: a network sender that comes back is read again within 5 s while other
streams go on; corrupt or truncated files are reported per stream and never end the node."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import aiomqtt
import av
import numpy as np
from conftest import Mosquitto, free_port, require_tool
from e2e_helpers import Traffic, check_predictions, collect, run_node, start_streamer, write_config
from media import make_clip, start_sender

NODE = "heal"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=10)


def _status(t: Traffic, stream: str, modality: str = "video") -> str | None:
    return t.retained_last.get(f"streamer/{NODE}/{stream}/status/{modality}")


async def test_a_udp_sender_that_returns_is_read_again_within_5_s(
    tmp_path: Path, mosquitto: Mosquitto, prediction_schema: dict[str, object]
) -> None:
    port = free_port()
    sender = start_sender(port, seconds=120)
    cfg = {
        "node": NODE,
        "mqtt": {"url": mosquitto.url},
        "streams": [
            {"id": "net", "video": f"udp://127.0.0.1:{port}"},
            {"id": "syn", "video": "synthetic:pattern?fps=10&size=160x120"},
        ],
    }
    try:
        async with run_node(tmp_path, cfg, mosquitto.port) as node:
            traffic = node.traffic

            def net_video(t: Traffic, after: float = 0.0) -> int:
                return sum(
                    1 for p in t.predictions["net"]
                    if p["modalities"]["video"]["present"] and p["window"]["start"] > after
                )  # fmt: skip

            await traffic.until(lambda t: net_video(t) >= 2, 60)
            _stop(sender)
            await traffic.until(lambda t: _status(t, "net") == "offline", 20)
            syn_before = len(traffic.predictions["syn"])
            await asyncio.sleep(4)  # the sender stays away a while (the scenario, not a sync)
            # the other stream went on meanwhile
            assert len(traffic.predictions["syn"]) >= syn_before + 6
            sender = start_sender(port, seconds=120)
            back, back_wall = time.monotonic(), time.time()
            await traffic.until(lambda t: _status(t, "net") == "online", 20)
            online_after = time.monotonic() - back
            await traffic.until(lambda t: net_video(t, after=back_wall) >= 1, 20)
            assert online_after <= 5.0, f"back after {online_after:.1f} s"
    finally:
        _stop(sender)
    assert node.rc == 0, node.log.read_text()[-3000:]
    check_predictions(traffic.predictions["syn"], prediction_schema, hop=0.5, length=2.0)
    text = node.log.read_text()
    assert "stream net: udp://" in text and "reopening" in text
    assert "Traceback" not in text


def _corpus(d: Path) -> dict[str, Path]:
    """A good clip and broken variants of it."""
    good = make_clip(d / "good.mp4", 3.0, audio=True)
    data = good.read_bytes()
    rng = np.random.default_rng(3)
    out = {"good": good}

    def write(name: str, content: bytes) -> None:
        out[name] = d / f"{name}.mp4"
        out[name].write_bytes(content)

    write("half", data[: len(data) // 2])
    write("header", data[:300])
    write("empty", b"")
    write("noise", rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    flipped = bytearray(data)
    for i in rng.integers(len(data) // 10, len(data), 200):
        flipped[i] ^= 0xFF
    write("flipped", bytes(flipped))
    zeroed = bytearray(data)
    zeroed[len(data) // 5 : 2 * len(data) // 5] = bytes(len(data) // 5)
    write("zeroed", bytes(zeroed))
    # a valid container with no video or audio: one subtitle track only
    srt = d / "subs.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n")
    nostreams = d / "nostreams.mkv"
    ffmpeg = require_tool("ffmpeg")
    subprocess.run([ffmpeg, "-loglevel", "error", "-y", "-i", str(srt), str(nostreams)], check=True)
    with av.open(str(nostreams)) as c:
        assert [s.type for s in c.streams] == ["subtitle"]
    out["nostreams"] = nostreams
    return out


async def test_corrupt_files_are_reported_per_stream_and_never_end_the_node(
    tmp_path: Path, mosquitto: Mosquitto, prediction_schema: dict[str, object]
) -> None:
    files = _corpus(tmp_path)
    cfg = {
        "node": NODE,
        "mqtt": {"url": mosquitto.url},
        "streams": [
            {"id": name, "video": f"file://{p}", "audio": f"file://{p}", "realtime": False}
            for name, p in files.items()
        ],
    }
    path = write_config(tmp_path / "cfg.yaml", cfg)
    log = tmp_path / "streamer.log"
    traffic = Traffic()
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
        # subscribed before the run starts (collect subscribes to the same filters again,
        # which replaces them: no duplicates)
        await client.subscribe(f"streamer/{NODE}/#", qos=1)
        collector = asyncio.create_task(collect(client, "streamer", NODE, traffic))
        proc = await start_streamer(log, "run", str(path))
        rc = await asyncio.wait_for(proc.wait(), 120)
        await traffic.until(lambda t: t.stopped.is_set(), 30)
        collector.cancel()
    text = log.read_text()
    assert rc == 0, text[-3000:]  # every source ended; none took the node down
    assert "Traceback" not in text
    check_predictions(traffic.predictions["good"], prediction_schema, hop=0.5, length=2.0)
    assert len(traffic.predictions["good"]) >= 4
    # the unreadable ones: one clear line each, naming the stream and the file
    for name in ("header", "empty", "noise", "nostreams"):
        lines = [x for x in text.splitlines() if f"stream {name}: file://" in x]
        assert lines, f"no error reported for {name}:\n{text[-2000:]}"
        assert not traffic.predictions.get(name), name
    # the damaged but partly readable ones: whatever decodes becomes valid predictions
    for name in ("half", "flipped", "zeroed"):
        preds = traffic.predictions.get(name, [])
        if preds:
            check_predictions(preds, prediction_schema, hop=0.5, length=2.0)
        else:
            assert f"stream {name}: file://" in text, name
