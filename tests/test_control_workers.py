"""``P/N/S/set/enabled`` under ``streamer run --workers 2``: only the worker that runs
the stream acts on it (one echo), and the other worker's stream goes on (a real
Mosquitto, the real CLI)."""

from __future__ import annotations

import signal
from pathlib import Path

from conftest import Mosquitto
from e2e_helpers import write_config
from test_control import preds, publish, stays_paused
from test_mqtt_discovery import recording
from test_workers import _start

NODE, BASE = "wctl", "streamer/wctl"


async def test_a_worker_pauses_only_its_own_stream(tmp_path: Path, mosquitto: Mosquitto) -> None:
    live = {"video": "synthetic:avdigits?seed=3", "text": []}
    cfg = write_config(tmp_path / "cfg.yaml", {
        "node": NODE, "mqtt": {"url": mosquitto.url, "stats_interval": 60.0},
        "model": {"threads": 1}, "streams": [{"id": "a", **live}, {"id": "b", **live}],
    })  # fmt: skip
    async with recording(mosquitto.port, [f"{BASE}/#"]) as rec:
        run = await _start(cfg, 2)  # a on worker 0, b on worker 1
        try:
            await rec.until_true(
                lambda r: len(preds(r, BASE, "a")) >= 2 and len(preds(r, BASE, "b")) >= 2
            )
            t_off = await publish(mosquitto.port, f"{BASE}/b/set/enabled", b"OFF")
            await rec.until_all(
                [(f"{BASE}/b/enabled", b"OFF"), (f"{BASE}/b/status/video", b"offline")]
            )
            await stays_paused(rec, BASE, "b", "a", t_off)
            assert rec.payloads(f"{BASE}/b/enabled") == [b"ON", b"OFF"]  # worker 1's only
            assert rec.payloads(f"{BASE}/a/enabled") == [b"ON"]
            assert rec.payloads(f"{BASE}/a/status/video")[-1] == b"online"
        finally:
            run.proc.send_signal(signal.SIGTERM)
            assert await run.wait(60) == 0, "\n".join(run.lines[-30:])
