"""End to end: ``streamer run`` as a subprocess, a clip made here, a real broker, text
events from a real client during the run, a real subscriber."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from conftest import Mosquitto, free_port, wait_port
from e2e_helpers import Traffic, check_predictions, collect, start_streamer, write_config
from media import make_clip

HOP, LENGTH = 0.5, 2.0
CLIP_S = 5.0
# The embedded broker lives in the node, so the test's clients connect only once the node
# runs, its clips already playing; its event loop also serves them while the streams
# start. A fresh-clone CI run saw the text publisher's broker gone at its first publish
# (online + 1.5 s) with 5 s clips: the longer clips give that start-up 5 s more.
EMBEDDED_CLIP_S = 10.0


def _config(url: str, clip: Path, video_only: Path) -> dict[str, Any]:
    return {
        "node": "e2e",
        "mqtt": {"url": url, "qos": 1, "stats_interval": 1.0},
        "window": {"length": LENGTH, "hop": HOP, "max_delay": 0.5},
        "model": {"device": "cpu"},
        "streams": [
            {"id": "cam1", "video": f"file://{clip}", "audio": f"file://{clip}"},
            {"id": "cam2", "video": f"file://{video_only}", "text": []},
        ],
    }


async def _run_and_collect(
    cfg_path: Path, port: int, traffic: Traffic, *, wait_broker: bool = False
) -> tuple[int, str, list[float]]:
    sent_at: list[float] = []
    log = cfg_path.with_suffix(".log")
    proc = await start_streamer(log, "--log-level", "debug", "run", str(cfg_path))
    try:
        if wait_broker:
            await asyncio.to_thread(wait_port, port, 60.0)
        sub = aiomqtt.Client("127.0.0.1", port, identifier="e2e-sub")
        await sub.__aenter__()
        watcher = asyncio.create_task(collect(sub, "streamer", "e2e", traffic))
        await asyncio.wait_for(traffic.online.wait(), 60)
        online_at = time.time()
        try:
            await _send_texts(port, sent_at)
        except aiomqtt.MqttError as e:
            tail = log.read_text(errors="replace")[-3000:]
            seen = time.strftime("%H:%M:%S", time.localtime(online_at))
            raise AssertionError(
                f"the text publisher lost the broker {time.time() - online_at:.1f} s after "
                f"'online' was seen (at {seen}.{int(online_at % 1 * 1000):03d}; node exit "
                f"code {proc.returncode}): {e}\n{tail}"
            ) from None
        rc = await asyncio.wait_for(proc.wait(), 60)
        # 'stopped' is published before the process exits; let it reach the subscriber
        await asyncio.wait_for(traffic.stopped.wait(), 10)
        watcher.cancel()
        try:
            await sub.__aexit__(None, None, None)
        except aiomqtt.MqttError:
            pass  # an embedded broker is gone with the process
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return rc, log.read_text(), sent_at


async def _send_texts(port: int, sent_at: list[float]) -> None:
    """Two valid events a second apart, with two malformed ones between: not UTF-8, and
    valid JSON whose text is a lone surrogate (it used to pass the parser and break the
    tokenizer, costing both streams the windows of its batch)."""
    async with aiomqtt.Client("127.0.0.1", port, identifier="e2e-text") as pub:
        sends = [b"the digit is seven", b"\xff\xfe\xfa", b'{"text": "\\ud800 seven"}',
                 b"7 again"]  # fmt: skip
        for i, payload in enumerate(sends):
            await asyncio.sleep(0.3 if i else 1.5)  # spacing the events in time
            await pub.publish("streamer/e2e/cam1/text", payload, qos=1)
            if i in (0, 3):
                sent_at.append(time.time())


def _assert_run(
    traffic: Traffic, schema: dict[str, Any], sent_at: list[float], clip_s: float = CLIP_S
) -> None:
    cam1, cam2 = traffic.predictions["cam1"], traffic.predictions["cam2"]
    check_predictions(cam1, schema, hop=HOP, length=LENGTH)
    check_predictions(cam2, schema, hop=HOP, length=LENGTH)
    # a 5 s clip at hop 0.5 and length 2: windows from the first covering one to the last
    assert len(cam1) >= int(clip_s / HOP), len(cam1)
    # the audio track outlasts the last frame by a few ms: a last window may start after it
    for p in cam1[:-1]:
        m = p["modalities"]
        assert m["video"]["present"] and m["audio"]["present"]
    # windows inside the clip hold every video slot and the whole 2 s of audio
    full = [p for p in cam1 if p["modalities"]["video"]["frames"] == int(LENGTH * 4)]
    assert len(full) >= 4, [p["modalities"] for p in cam1]
    inner = full[1:-1]  # the clip's start and end need not fall on the window grid
    for p in inner:
        assert p["modalities"]["audio"]["seconds"] == pytest.approx(LENGTH, abs=1e-3)
    for p in cam2:  # video only: audio and text are absent, never invented
        m = p["modalities"]
        assert m["video"]["present"] and not m["audio"]["present"]
        assert m["audio"]["seconds"] == 0 and not m["text"]["present"]
    # each text event lands in the windows that cover the moment it was sent
    for t in sent_at:
        covering = [p for p in cam1 if p["window"]["start"] + 0.1 < t < p["window"]["end"] - 0.1]
        assert covering, f"no window covers the text sent at {t}"
        for p in covering:
            assert p["modalities"]["text"]["present"], p
    assert any(p["modalities"]["text"]["events"] == 2 for p in cam1)
    before = [p for p in cam1 if p["window"]["end"] < sent_at[0] - 0.3]
    assert all(not p["modalities"]["text"]["present"] for p in before)
    # the malformed events were counted as rejected, by kind; no window was lost
    assert traffic.stats, "no stats message"
    last = traffic.stats[-1]["streams"]
    assert last["cam1"]["rejected_by"].get("not_utf8", 0) >= 2, last["cam1"]
    assert all(s["dropped_by"].get("inference_error", 0) == 0 for s in last.values()), last
    # retained state at the end
    assert traffic.available[-1] == "stopped" and "online" in traffic.available
    assert traffic.retained_last["streamer/e2e/cam1/status/video"] == "offline"
    assert traffic.retained_last["streamer/e2e/cam1/label"] == cam1[-1]["label"]
    assert "homeassistant/sensor/e2e/cam1_label/config" in traffic.retained_last
    assert traffic.retained_last["streamer/e2e/cam1/available"] == "stopped"


async def test_run_file_against_mosquitto(
    tmp_path: Path, mosquitto: Mosquitto, prediction_schema: dict[str, Any]
) -> None:
    clip = make_clip(tmp_path / "clip.mp4", CLIP_S, audio=True)
    video_only = make_clip(tmp_path / "video.mp4", CLIP_S, audio=False)
    cfg = write_config(tmp_path / "cfg.yaml", _config(mosquitto.url, clip, video_only))
    traffic = Traffic()
    rc, stderr, sent_at = await _run_and_collect(cfg, mosquitto.port, traffic)
    assert rc == 0, stderr
    _assert_run(traffic, prediction_schema, sent_at)


async def test_run_file_through_embedded_broker(
    tmp_path: Path, prediction_schema: dict[str, Any]
) -> None:
    clip = make_clip(tmp_path / "clip.mp4", EMBEDDED_CLIP_S, audio=True)
    video_only = make_clip(tmp_path / "video.mp4", EMBEDDED_CLIP_S, audio=False)
    port = free_port()
    cfg = write_config(
        tmp_path / "cfg.yaml", _config(f"embedded://127.0.0.1:{port}", clip, video_only)
    )
    traffic = Traffic()
    rc, stderr, sent_at = await _run_and_collect(cfg, port, traffic, wait_broker=True)
    assert rc == 0, stderr
    _assert_run(traffic, prediction_schema, sent_at, EMBEDDED_CLIP_S)
