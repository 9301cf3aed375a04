"""``streamer record``: live streams (video, audio, MQTT text) written as training clips
that the training reader takes back as windows with every modality present."""

from __future__ import annotations

import asyncio
import csv
import json
import subprocess
import sys
from pathlib import Path

import aiomqtt
import av
from conftest import REPO, Mosquitto

from models.spec import ModelSpec
from streamer.config import WindowConfig, parse_config
from streamer.record import Recording, record
from streamer.training.clipset import clip_windows, read_text_events


async def test_a_recording_is_a_clip_folder_training_reads(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    cfg = parse_config({
        "node": "rec",
        "mqtt": {"url": mosquitto.url},
        "streams": [{"id": "cam", "video": "synthetic:pattern?fps=10",
                     "audio": "synthetic:tone?freq=440"}],
    })  # fmt: skip
    # retained: the recorder's text subscription gets it as soon as it is up
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as c:
        await c.publish("streamer/rec/cam/text", b"the kettle is on", qos=1, retain=True)
    out = tmp_path / "train"
    out.mkdir()
    rec = Recording(size=96, fps=5, seconds=3.0, label="kettle")
    assert await record(cfg, out, rec) == 0

    mp4 = next(out.glob("cam_*.mp4"))
    with av.open(str(mp4)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert (v.width, v.height) == (96, 96) and a.rate == 16_000
        frames = sum(1 for _ in c.decode(video=0))
    assert 13 <= frames <= 15  # 5 fps for 3 s of capture
    events = [json.loads(line) for line in mp4.with_suffix(".jsonl").read_text().splitlines()]
    assert [e["text"] for e in events] == ["the kettle is on"] and 0 <= events[0]["t"] < 3
    with (out / "labels.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert rows == [{"clip": mp4.stem, "start": "0", "end": "3.000", "label": "kettle"}]

    spec = ModelSpec()
    window = WindowConfig(length=2.0, hop=0.5, max_delay=0.5)
    texts = read_text_events(mp4.with_suffix(".jsonl"), mp4.stem)
    windows = await clip_windows(mp4.resolve(), texts, spec, window)
    inside = [w for w in windows if w.start_ns >= texts[0].pts_ns - 2 * 10**9]
    assert windows and all(w.present["video"] and w.present["audio"] for w in windows[1:-1])
    assert any(w.present["text"] for w in inside)


def test_a_bad_label_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("node: r\nstreams: [{id: a, video: 'synthetic:pattern'}]\n")
    r = subprocess.run(
        [sys.executable, "-m", "streamer", "record", str(cfg), "--seconds", "1",
         "--out", str(tmp_path / "o"), "--label", "a,b"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        "streamer: error: --label: 'a,b': a label is one word or phrase, no comma"
    )


async def test_a_source_that_sends_nothing_ends_by_the_clock(tmp_path: Path) -> None:
    cfg = parse_config({
        "node": "rec", "mqtt": {"url": "embedded"},
        "streams": [{"id": "a", "video": "synthetic:pattern", "text": []},
                    {"id": "quiet", "audio": "udp://127.0.0.1:9?timeout=30", "text": []}],
    })  # fmt: skip
    out = tmp_path / "o"
    out.mkdir()
    # the quiet stream's source never sends: the wall clock ends it (2 s past --seconds)
    rec = Recording(size=32, fps=4, seconds=1.0)
    assert await asyncio.wait_for(record(cfg, out, rec), 20) == 0
    assert not (out / "labels.csv").exists()
    with av.open(str(next(out.glob("a_*.mp4")))) as c:
        assert sum(1 for _ in c.decode(video=0)) >= 3
