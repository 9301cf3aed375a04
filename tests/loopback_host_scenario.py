"""A host whose only address is loopback: a WHIP publisher reaches ``streamer run``.

Run by ``test_web_hostile.py`` inside a network namespace with only ``lo`` (``unshare -n``):
``python loopback_host_scenario.py WORKDIR``. The node's config sets no
``http.host_addresses``, so the node must find that loopback is all there is. It starts
Mosquitto and ``streamer run``, publishes with a Python (aiortc) peer, waits (bounded) for
its data channel to open and for video frames to be counted in ``/metrics``, deletes the
session and stops the node. It prints one JSON object of what it saw; the test asserts on
it. Nothing here decides pass or fail.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from conftest import free_port, start_mosquitto, wait_port
from e2e_helpers import start_streamer, write_config
from webrtc_helpers import Publisher, loopback_only, webrtc_config


async def _video_frames(http: aiohttp.ClientSession, base: str) -> float:
    async with http.get(f"{base}/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith("streamer_frames_in_total{") and 'stream="cam"' in line:
            if 'modality="video"' in line:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


async def scenario(work: Path) -> dict[str, Any]:
    loopback_only()  # the publisher's side, as a browser on this host would offer
    seen: dict[str, Any] = {"answered": None, "open": False, "video_frames": 0.0}
    mosquitto = start_mosquitto(work)
    port = free_port()
    cfg = webrtc_config(mqtt_url=mosquitto.url, http_port=port, token_file=None)
    del cfg["http"]["host_addresses"]  # the node decides
    log = work / "streamer.log"
    proc = await start_streamer(log, "run", str(write_config(work / "cfg.yaml", cfg)))
    base = f"http://127.0.0.1:{port}"
    pub = Publisher(base, "cam")
    try:
        await asyncio.to_thread(wait_port, port, 60)
        async with aiohttp.ClientSession() as http:
            status, answer, _ = await pub.post(http, None)
            seen["answered"] = status
            seen["answer_candidates"] = [
                line for line in answer.splitlines() if line.startswith("a=candidate")
            ]
            if status == 201:
                try:
                    await asyncio.wait_for(pub.open.wait(), 30)
                    seen["open"] = True
                except TimeoutError:
                    pass
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and seen["video_frames"] == 0:
                    seen["video_frames"] = await _video_frames(http, base)
                    await asyncio.sleep(0.2)  # polling /metrics, with a deadline
                seen["deleted"] = await pub.delete(http, None)
    finally:
        await pub.close()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        seen["streamer_rc"] = await asyncio.wait_for(proc.wait(), 30)
        mosquitto.stop()
    seen["streamer_log"] = log.read_text(errors="replace").splitlines()
    return seen


if __name__ == "__main__":
    print(json.dumps(asyncio.run(scenario(Path(sys.argv[1])))))
