"""Events under ``streamer run --workers 2``: each worker tracks its own streams' events
and publishes them, while the supervisor (which owns ``available`` and discovery)
announces one binary sensor per stream and label, once; a stop leaves every label OFF.

Every wait is on a message, bounded by a timeout.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path

from conftest import Mosquitto
from e2e_helpers import write_config
from test_events_e2e import LABELS, events
from test_mqtt_discovery import Recorder, recording, retained_now
from test_workers import _start

NODE = "evw"
STREAMS = ("a", "b")


def each_stream_ended(rec: Recorder) -> bool:
    return all(
        any(m["type"] == "end" for _, m in events(rec, f"streamer/{NODE}/{s}")) for s in STREAMS
    )


async def test_events_with_workers_each_stream_gets_its_events_and_one_discovery(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    cfg = {
        "node": NODE,
        "mqtt": {"url": mosquitto.url, "stats_interval": 60.0},
        "model": {"device": "cpu"},
        "streams": [
            {
                "id": s,
                "video": f"synthetic:avdigits?seed={i + 3}",
                "audio": f"synthetic:avdigits?seed={i + 3}",
            }
            for i, s in enumerate(STREAMS)
        ],  # fmt: skip
        "events": {"on": 0.5, "off": 0.3, "min_windows": 2, "cooldown_s": 0.5},
    }
    path = write_config(tmp_path / "cfg.yaml", cfg)
    async with recording(mosquitto.port, [f"streamer/{NODE}/#", "homeassistant/#"]) as rec:
        run = await _start(path, 2)
        try:
            await rec.until_true(each_stream_ended)
        finally:
            if run.proc.returncode is None:
                run.proc.send_signal(signal.SIGTERM)
        assert await run.wait(60) == 0, "\n".join(run.lines[-30:])
        await rec.until_true(
            lambda r: r.payloads(f"streamer/{NODE}/available")[-1:] == [b"stopped"]
        )
    runs = {}
    for s in STREAMS:
        got = [m for _, m in events(rec, f"streamer/{NODE}/{s}")]
        assert {m["event"]["stream"] for m in got} == {s}
        runs[s] = {m["event"]["run"] for m in got}
        assert len(runs[s]) == 1  # one worker's run
        by_id: dict[str, list[str]] = {}
        for m in got:
            by_id.setdefault(m["event"]["id"], []).append(m["type"])
        for kinds in by_id.values():
            assert kinds[0] == "new" and kinds.count("new") == 1 and kinds.count("end") <= 1
    assert runs["a"] != runs["b"]  # two workers, one stream each
    # discovery: the supervisor's, once per stream and label (a worker announces nothing)
    configs = Counter(
        tp for tp, p in rec.messages if tp.startswith("homeassistant/binary_sensor/") and p
    )
    want = {f"homeassistant/binary_sensor/{NODE}/{s}_event_{x}/config" for s in STREAMS
            for x in LABELS}  # fmt: skip
    assert set(configs) == want and set(configs.values()) == {1}
    images = Counter(tp for tp, p in rec.messages if tp.startswith("homeassistant/image/") and p)
    assert images == {f"homeassistant/image/{NODE}/{s}_snapshot/config": 1 for s in STREAMS}
    for s in STREAMS:  # each worker's snapshots of its own stream's events
        assert rec.payloads(f"streamer/{NODE}/{s}/snapshot")[-1][:2] == b"\xff\xd8"
    left = await retained_now(mosquitto.port, [f"streamer/{NODE}/+/event/+"])
    assert left == {f"streamer/{NODE}/{s}/event/{x}": b"OFF" for s in STREAMS for x in LABELS}
    print(json.dumps({s: len(events(rec, f"streamer/{NODE}/{s}")) for s in STREAMS}))
