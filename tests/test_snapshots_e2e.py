"""Snapshots end to end: ``streamer run`` on a live AV-digits stream (its picture changes
with its truth every 3 s) against a real Mosquitto, with the HTTP server: an event
publishes a retained ``P/N/S/snapshot`` that decodes as a JPEG of a frame of the event's
peak window (not of the segment before), the Home Assistant ``image`` entity is
discovered beside the stream's others, and ``/api/streams/S/latest.jpg`` is served with
the token only.

The frame is whichever the ring held in the peak window when the event message went
out: the newest, on an idle machine; an older one of the same window when a loaded
machine rendered the newest late (the picture moves within a segment, so the test
compares the snapshot with every frame the window could hold).

Every wait is on a message or a poll with a deadline.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import numpy.typing as npt
from conftest import Mosquitto, free_port
from e2e_helpers import run_node
from test_mqtt_discovery import Recorder, recording, retained_now

from streamer.frames import NS
from streamer.generators import generator

SEED = 3
TOKEN = "snap-token"
BASE = "streamer/sn/cam"


def decode(jpeg: bytes) -> npt.NDArray[np.uint8]:
    frames = av.CodecContext.create("mjpeg", "r").decode(av.Packet(jpeg))
    assert len(frames) == 1 and isinstance(frames[0], av.VideoFrame)
    return frames[0].to_ndarray(format="rgb24")


def events_before_first_snapshot(rec: Recorder) -> list[dict[str, Any]]:
    """The events of the messages that came before the first snapshot (it follows the
    message it was taken for; a newer one may replace an unsent one)."""
    events = []
    for tp, p in rec.messages:
        if tp == f"{BASE}/snapshot":
            return events
        if tp == f"{BASE}/events":
            events.append(json.loads(p)["event"])
    raise AssertionError("no snapshot")


def window_s(rec: Recorder) -> float:
    w = json.loads(rec.payloads(f"{BASE}/prediction")[0])["window"]
    return float(w["end"]) - float(w["start"])


def mse(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> float:
    """Of 8x8 block means: the picture's layout and colours, not its noise."""

    def blocks(x: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        h, w = x.shape[0] // 8, x.shape[1] // 8
        return x[: h * 8, : w * 8].astype(np.float32).reshape(h, 8, w, 8, 3).mean(axis=(1, 3))

    return float(((blocks(a) - blocks(b)) ** 2).mean())


async def latest(http: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, bytes, str]:
    async with http.get(url, **kw) as resp:
        return resp.status, await resp.read(), resp.content_type


async def test_an_event_publishes_its_snapshot_and_http_serves_the_latest(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    port = free_port()
    src = f"synthetic:avdigits?seed={SEED}"  # one source: video and audio
    cfg = {
        "node": "sn",
        "http": {"listen": f"127.0.0.1:{port}", "token_file": str(token_file)},
        "mqtt": {"url": mosquitto.url, "stats_interval": 60.0},
        "streams": [{"id": "cam", "video": src, "audio": src}],
        "model": {"device": "cpu"},
        "snapshots": {"fps": 10.0, "seconds": 10.0, "width": 0},  # frames near the peak
        "events": {"on": 0.5, "off": 0.3, "min_windows": 2, "cooldown_s": 0.5},
    }
    url = f"http://127.0.0.1:{port}/api/streams/cam/latest.jpg"
    async with (
        recording(mosquitto.port, [f"{BASE}/#", "homeassistant/#"]) as rec,
        run_node(tmp_path, cfg, mosquitto.port) as run,
        aiohttp.ClientSession() as http,
    ):
        await rec.until_true(lambda r: bool(r.payloads(f"{BASE}/snapshot")))
        served = (0, b"", "")
        async with asyncio.timeout(30):  # the server is up once the node publishes
            while served[0] != 200:
                served = await latest(http, url, headers={"Authorization": f"Bearer {TOKEN}"})
                if served[0] != 200:
                    await asyncio.sleep(0.1)  # polling the server, bounded by the timeout
        by_query = await latest(http, f"{url}?token={TOKEN}")
        refused = await latest(http, url)
        wrong = await latest(http, f"{url}?token=nope")
        missing = await latest(http, f"http://127.0.0.1:{port}/api/streams/nope/latest.jpg",
                               headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
        events = events_before_first_snapshot(rec)
        length_s = window_s(rec)
    assert run.rc == 0, run.log.read_text()
    # HTTP: the newest JPEG with the token (header or query), 401 without, 404 for none
    assert served[2] == "image/jpeg" and decode(served[1]).ndim == 3
    assert by_query[0] == 200 and by_query[2] == "image/jpeg"
    assert refused[0] == 401 and wrong[0] == 401 and missing[0] == 404
    # MQTT: the first snapshot is a frame of an event's peak window, at the source's size
    snap = decode(rec.payloads(f"{BASE}/snapshot")[0])
    gen = generator("avdigits")
    step = NS // 10  # the ring's fps: at most one frame per 100 ms slot
    candidates = []  # (block MSE, pts) of each frame the peak windows could hold
    for ev in events:
        peak_ns = round(ev["peak_time"] * NS)
        first = peak_ns - round(length_s * NS) - step  # nearest within one period
        candidates += [
            (mse(snap, gen.frame_at(SEED, t)), t) for t in range(first, peak_ns + step, step // 2)
        ]
    best, best_ns = min(candidates)
    here = gen.frame_at(SEED, best_ns)
    assert snap.shape == here.shape
    before = gen.frame_at(SEED, best_ns - 3 * NS)  # the segment before that frame
    print(
        f"snapshot vs the nearest frame of its window, vs the segment before (block MSE): "
        f"{best:.0f}, {mse(snap, before):.0f}"
    )
    assert best < 60, candidates  # JPEG's loss only: the same picture
    assert best < mse(snap, before) / 3, (best, mse(snap, before))
    # retained, and an image entity beside the stream's label sensor
    kept = await retained_now(mosquitto.port, [f"{BASE}/snapshot"])
    assert decode(kept[f"{BASE}/snapshot"]).shape == here.shape
    configs = {tp: json.loads(p) for tp, p in rec.messages if tp.startswith("homeassistant/") and p}
    label = configs["homeassistant/sensor/sn/cam_label/config"]
    image = configs["homeassistant/image/sn/cam_snapshot/config"]
    assert image["image_topic"] == f"{BASE}/snapshot"
    assert image["content_type"] == "image/jpeg"
    assert image["unique_id"] == "streamer/sn/cam/snapshot"
    assert image["device"] == label["device"] and image["availability"] == label["availability"]
