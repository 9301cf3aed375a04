"""Headless Chromium publishes to ``streamer run`` through the page's own JavaScript.

Run by ``test_webrtc_browser.py`` inside a loopback-only network namespace (``unshare -n``):
``python browser_scenario.py WORKDIR``. It makes a y4m + wav for Chromium's fake camera and
microphone, starts Mosquitto and ``streamer run`` (HTTP on loopback, a token), opens
``/publish?stream=cam&token=...&autostart=1``, waits for predictions of that stream with video
and audio present, types a text event into the page's input over the DevTools protocol,
waits for a window holding it, and reads the page's own state. It prints one JSON object
of what it saw; the test asserts on it. Nothing here decides pass or fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import numpy as np
from conftest import free_port, start_mosquitto, wait_port
from e2e_helpers import Traffic, collect, start_streamer, write_config
from media import write_wav
from webrtc_helpers import webrtc_config

TOKEN = "browser-token"
TEXT = "it is a seven"
W, H, FPS, SECONDS = 320, 240, 15, 4


def write_y4m(path: Path) -> Path:
    """A moving white bar on grey, 4:2:0, looped by Chromium."""
    with path.open("wb") as f:
        f.write(f"YUV4MPEG2 W{W} H{H} F{FPS}:1 Ip A1:1 C420jpeg\n".encode())
        for n in range(FPS * SECONDS):
            y = np.full((H, W), 90, dtype=np.uint8)
            x = (n * 10) % W
            y[:, x : x + 30] = 235
            uv = np.full((H // 2, W // 2), 128, dtype=np.uint8)
            f.write(b"FRAME\n" + y.tobytes() + uv.tobytes() + uv.tobytes())
    return path


class DevTools:
    """The few Chrome DevTools Protocol calls the scenario needs, over aiohttp's websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.n = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.n += 1
        await self.ws.send_json({"id": self.n, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json()
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                result: dict[str, Any] = msg.get("result", {})
                return result

    async def js(self, expression: str) -> Any:
        r = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        return r.get("result", {}).get("value")

    async def until(self, condition: str, seconds: float) -> None:
        """Wait until the page's ``condition`` holds, re-checked on its state events."""
        wait = (
            "new Promise((resolve) => { const check = () => { if (" + condition + ") {"
            " window.removeEventListener('streamer:state', check); resolve(true); } };"
            " window.addEventListener('streamer:state', check); check(); })"
        )
        async with asyncio.timeout(seconds):
            await self.js(wait)


def chromium_command(profile: str, devtools_port: int, url: str, *extra: str) -> list[str]:
    """Headless Chromium opening ``url``, its DevTools protocol on ``devtools_port``."""
    return [
        shutil.which("chromium") or "chromium", "--headless", "--no-sandbox", "--disable-gpu",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}", *extra,
        f"--remote-debugging-port={devtools_port}", "--remote-allow-origins=*", url,
    ]  # fmt: skip


async def page_target(http: aiohttp.ClientSession, port: int, contains: str) -> str:
    async with asyncio.timeout(30):
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                    for t in await resp.json():
                        if t.get("type") == "page" and contains in t.get("url", ""):
                            return str(t["webSocketDebuggerUrl"])
            await asyncio.sleep(0.1)  # polling Chromium's target list until the page exists


async def main(work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"steps": []}
    broker = start_mosquitto(work)
    video = write_y4m(work / "cam.y4m")
    t = np.arange(48_000 * SECONDS) / 48_000
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    audio = write_wav(work / "mic.wav", tone, 48_000)
    token_file = work / "token"
    token_file.write_text(TOKEN)
    port, devtools_port = free_port(), free_port()
    cfg = write_config(
        work / "cfg.yaml",
        webrtc_config(mqtt_url=broker.url, http_port=port, token_file=token_file, node="web"),
    )
    log = work / "streamer.log"
    proc = await start_streamer(log, "run", str(cfg))
    chromium: subprocess.Popen[bytes] | None = None
    traffic = Traffic()
    try:
        async with (
            aiomqtt.Client("127.0.0.1", broker.port) as client,
            aiohttp.ClientSession() as http,
        ):
            collector = asyncio.create_task(collect(client, "streamer", "web", traffic))
            await traffic.until(lambda t: t.online.is_set(), 60)
            await asyncio.to_thread(wait_port, port, 30)
            page = f"http://127.0.0.1:{port}/publish?stream=cam&token={TOKEN}&autostart=1"
            profile = tempfile.mkdtemp(dir=work)
            chromium = subprocess.Popen(  # noqa: ASYNC220 - started once, never waited on here
                chromium_command(
                    profile,
                    devtools_port,
                    page,
                    "--use-fake-ui-for-media-stream",
                    "--use-fake-device-for-media-stream",
                    "--allow-loopback-in-peer-connection",
                    f"--use-file-for-fake-video-capture={video}",
                    f"--use-file-for-fake-audio-capture={audio}",
                ),  # fmt: skip
                stdout=subprocess.DEVNULL,
                stderr=(work / "chromium.log").open("wb"),
            )
            ws_url = await page_target(http, devtools_port, f":{port}/")
            async with http.ws_connect(ws_url, max_msg_size=0) as ws:
                cdp = DevTools(ws)

                def full(p: dict[str, Any]) -> bool:  # a whole window of camera and mic
                    m = p["modalities"]
                    return bool(m["video"]["frames"] == 8 and m["audio"]["seconds"] > 1.9)

                await traffic.until(lambda t: any(full(p) for p in t.predictions["cam"]), 60)
                out["steps"].append("media")
                out["status"] = {
                    m: traffic.retained_last.get(f"streamer/web/cam/status/{m}")
                    for m in ("video", "audio", "text")
                }
                # type into the page's text box and press its Send button, as a person would
                await cdp.until("!document.getElementById('send').disabled", 30)
                await cdp.js("document.getElementById('text').focus()")
                await cdp.call("Input.insertText", text=TEXT)
                sent_at = time.time()
                await cdp.js("document.getElementById('send').click()")
                out["sent_at"] = sent_at

                def has_text(t: Traffic) -> bool:
                    return any(
                        p["modalities"]["text"]["present"]
                        and p["window"]["start"] < sent_at < p["window"]["end"]
                        for p in t.predictions["cam"]
                    )

                await traffic.until(has_text, 30)
                out["steps"].append("text")
                # the page shows the stream's live predictions (server-sent events)
                await cdp.until("window.streamerState.predictions >= 2", 30)
                out["page"] = await cdp.js(
                    "({predictions: streamerState.predictions, sent: streamerState.sent,"
                    " published: streamerState.published, label: streamerState.last.label,"
                    " state: document.getElementById('state').textContent})"
                )
                out["steps"].append("page")
            collector.cancel()
    finally:
        out["predictions"] = traffic.predictions.get("cam", [])
        if chromium is not None:
            chromium.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                chromium.wait(timeout=10)
            if chromium.poll() is None:
                chromium.kill()
        if proc.returncode is None:
            proc.terminate()
        out["streamer_rc"] = await asyncio.wait_for(proc.wait(), 30)
        out["streamer_log"] = log.read_text()[-3000:]
        broker.stop()
    return out


if __name__ == "__main__":
    result = asyncio.run(main(Path(sys.argv[1])))
    print(json.dumps(result))
