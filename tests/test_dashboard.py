"""The dashboard: :class:`StreamBoard` (``/api/streams``, ``/recent``) as units, its routes
over real HTTP, and the page itself in headless Chromium against ``streamer run`` with
two synthetic AV-digits streams (their truth changes every 3 s) and a webrtc one, a real
Mosquitto, ``http:`` with a token and ``events:``.

The browser tests write a screenshot for a person to look at and print its path (``-s``).
``test_dashboard_shows_frames_and_events`` needs the snapshots' ``latest.jpg`` and the
history's ``/api/events``: it fails without them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from browser_scenario import DevTools, chromium_command, page_target
from conftest import Mosquitto, free_port, require_tool, wait_port
from e2e_helpers import run_node

from models.tags import Tag
from streamer.predictions import ModelId, Prediction
from streamer.sinks.base import Status
from streamer.web import board as board_mod
from streamer.web.board import RECENT_MAX, RECENT_S, StreamBoard
from streamer.web.dashboard import dashboard_routes

TOKEN = "dash-token"
MODEL = ModelId("m", "1", ("a", "b"))


def _pred(stream: str, end: float, *, label: str = "a", score: float = 0.9,
          present: tuple[bool, bool, bool] = (True, True, False), ms: float = 50.0,
          tags: tuple[Tag, ...] | None = None) -> Prediction:  # fmt: skip
    return Prediction(
        node="n", stream=stream, run="r", seq=0, start_s=end - 2.0, end_s=end, label=label,
        score=score, scores=(("a", score), ("b", round(1 - score, 6))), present=present,
        frames=8, audio_seconds=2.0, text_events=0, inference_ms=5.0, end_to_publish_ms=ms,
        model=MODEL, tags=tags,
    )  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_lights_rates_and_latency_follow_the_predictions_and_statuses() -> None:
    clock = Clock()
    b = StreamBoard([("cam", ["video", "audio"], False), ("ph", ["video"], True)], now=clock)
    cam = b.stream_json(b.views["cam"])
    assert cam["modalities"] == {"video": "offline", "audio": "offline"}
    assert (cam["label"], cam["score"], cam["windows_per_s"], cam["latency_ms"]) == (
        None, None, 0.0, None)  # fmt: skip
    b.publish(Status("cam", "video", True))
    b.publish(Status("cam", "audio", True))
    assert b.lights(b.views["cam"]) == {"video": "late", "audio": "late"}  # no window yet
    for i in range(11):  # 2 windows/s for 5 s
        b.publish(_pred("cam", 100.0 + i / 2, present=(True, False, False), ms=40.0 + i))
        clock.t += 0.5
    tag = Tag("speech", 0.7, "audio")
    b.publish(_pred("cam", 106.0, label="b", score=0.8, present=(True, False, False), ms=51,
                    tags=(tag,)))  # fmt: skip
    cam = b.stream_json(b.views["cam"])
    assert cam["modalities"] == {"video": "present", "audio": "late"}
    assert (cam["label"], cam["score"]) == ("b", 0.8)
    assert cam["tags"] == [{"tag": "speech", "score": 0.7, "modality": "audio"}]
    assert cam["windows_per_s"] == 2.0 and cam["latency_ms"] == 45.5
    b.publish(Status("cam", "audio", False))
    assert b.lights(b.views["cam"])["audio"] == "offline"
    clock.t += board_mod.STALE_S + 1  # no window for long: online is late, rates gone
    cam = b.stream_json(b.views["cam"])
    assert cam["modalities"]["video"] == "late"
    assert cam["windows_per_s"] == 0.0 and cam["latency_ms"] is None
    body = b.streams_json("n")
    assert body["node"] == "n" and [s["id"] for s in body["streams"]] == ["cam", "ph"]
    assert body["streams"][1]["webrtc"] is True and body["streams"][1]["enabled"] is True
    b.publish(_pred("other", 1.0))  # a stream it does not know: ignored
    b.publish(Status("other", "video", True))
    assert set(b.views) == {"cam", "ph"}


def test_a_paused_stream_shows_as_not_enabled() -> None:
    paused = {"ph"}
    b = StreamBoard([("cam", ["video"], False), ("ph", ["video"], True)],
                    enabled=lambda s: s not in paused)  # fmt: skip
    assert [s["enabled"] for s in b.streams_json("n")["streams"]] == [True, False]
    paused.clear()  # asked each time: set/enabled ON shows at the next refresh
    assert [s["enabled"] for s in b.streams_json("n")["streams"]] == [True, True]


def test_recent_ring_is_bounded_by_age_and_cap_and_counts_what_the_cap_pushed_out() -> None:
    b = StreamBoard([("cam", ["video"], False)])
    hop = RECENT_S / RECENT_MAX / 2  # the cap is reached before the age
    for i in range(RECENT_MAX + 10):
        b.publish(_pred("cam", 1000.0 + i * hop))
    r = b.recent_json("cam")
    assert len(r["points"]) == RECENT_MAX and r["trimmed"] == 10
    assert r["points"][0]["t"] == 1000.0 + 10 * hop
    assert r["points"][-1]["scores"] == {"a": 0.9, "b": 0.1}
    b.publish(_pred("cam", 5000.0))  # everything older than RECENT_S ages out, uncounted
    r = b.recent_json("cam")
    assert [p["t"] for p in r["points"]] == [5000.0] and r["trimmed"] == 10
    assert b.counters() == {"cam": {"recent": 1, "trimmed": 10}}


async def test_routes_need_the_token_and_refuse_traversal() -> None:
    b = StreamBoard([("cam", ["video"], False)])
    b.publish(_pred("cam", 10.0))

    def require(request: web.Request) -> None:
        if request.query.get("token") != TOKEN:
            raise web.HTTPUnauthorized()

    app = web.Application()
    app.add_routes(dashboard_routes(b, node="n", require_token=require))
    async with TestClient(TestServer(app)) as client:
        page = await client.get("/")
        assert page.status == 200 and "dashboard.js" in await page.text()
        assert (await client.get("/api/streams")).status == 401
        assert (await client.get("/api/streams/cam/recent")).status == 401
        got = await (await client.get(f"/api/streams?token={TOKEN}")).json()
        assert got["streams"][0]["label"] == "a" and got["node"] == "n"
        recent = await (await client.get(f"/api/streams/cam/recent?token={TOKEN}")).json()
        assert [p["t"] for p in recent["points"]] == [10.0]
        assert (await client.get(f"/api/streams/nope/recent?token={TOKEN}")).status == 404
        js = await client.get("/static/vendor/uPlot.iife.min.js")
        assert js.status == 200 and js.content_type == "text/javascript"
        assert "uPlot" in await js.text()
        for bad in ["..%2Fdashboard.js", "%2E%2E%2F..%2Fserver.py", ".hidden.js", "nope.js",
                    "uPlot.LICENSE"]:  # fmt: skip
            assert (await client.get(f"/static/vendor/{bad}")).status == 404, bad


# -- the page in a real browser -----------------------------------------------------------
class Page:
    def __init__(self, cdp: DevTools, work: Path) -> None:
        self.cdp = cdp
        self.work = work

    async def until(self, condition: str, seconds: float, what: str) -> None:
        """Poll the page's ``condition`` with a deadline; fail saying ``what`` is missing."""
        deadline = time.monotonic() + seconds
        while not await self.cdp.js(f"!!(window.dashboardState && ({condition}))"):
            if time.monotonic() > deadline:
                raise AssertionError(f"within {seconds:g} s: {what}")
            await asyncio.sleep(0.2)  # polling the page with a deadline

    async def screenshot(self, name: str) -> Path:
        shot = await self.cdp.call("Page.captureScreenshot", format="png")
        path = self.work / name
        path.write_bytes(base64.b64decode(shot["data"]))
        print(f"dashboard screenshot: {path}")
        return path


def _config(mqtt_url: str, port: int, token_file: Path) -> dict[str, Any]:
    synthetic = [{"id": s, "video": f"synthetic:avdigits?seed={seed}",
                  "audio": f"synthetic:avdigits?seed={seed}"}
                 for s, seed in (("hall", 3), ("yard", 5))]  # fmt: skip
    return {
        "node": "dash",
        "mqtt": {"url": mqtt_url, "stats_interval": 60.0},
        "model": {"device": "cpu"},
        "http": {
            "listen": f"127.0.0.1:{port}",
            "token_file": str(token_file),
            "ice_servers": [],
            "host_addresses": ["127.0.0.1"],
        },  # fmt: skip
        "streams": [*synthetic, {"id": "phone", "video": "webrtc", "audio": "webrtc"}],
        "events": {"on": 0.5, "off": 0.3, "min_windows": 2, "cooldown_s": 0.5},
    }


@contextlib.asynccontextmanager
async def dashboard(tmp: Path, mosquitto: Mosquitto) -> AsyncIterator[Page]:
    require_tool("chromium")
    port, devtools_port = free_port(), free_port()
    token_file = tmp / "token"
    token_file.write_text(TOKEN)
    async with run_node(tmp, _config(mosquitto.url, port, token_file), mosquitto.port) as run:
        await run.traffic.until(lambda t: t.online.is_set(), 60)
        await asyncio.to_thread(wait_port, port, 30)
        log = (tmp / "chromium.log").open("wb")
        chromium = subprocess.Popen(  # noqa: ASYNC220 - started once, never waited on here
            chromium_command(
                tempfile.mkdtemp(dir=tmp),
                devtools_port,
                f"http://127.0.0.1:{port}/#token={TOKEN}",
                "--hide-scrollbars",
                "--window-size=1500,1150",
            ),  # fmt: skip
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            async with aiohttp.ClientSession() as http:
                ws_url = await page_target(http, devtools_port, f":{port}/")
                async with http.ws_connect(ws_url, max_msg_size=0) as ws:
                    yield Page(DevTools(ws), tmp)
        finally:
            chromium.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                chromium.wait(timeout=10)
            if chromium.poll() is None:
                chromium.kill()
                chromium.wait()
            log.close()
    assert run.rc == 0, run.log.read_text()[-3000:]


LIVE = "['hall', 'yard'].map((id) => dashboardState.streams[id])"
SPREAD = (  # max - min luma of hall's frame at its natural size, as the page shows it
    "(() => { const img = document.querySelector('#card-hall .frame img');"
    " const w = img.naturalWidth, h = img.naturalHeight; if (!w || !h) return 0;"
    " const c = document.createElement('canvas'); c.width = w; c.height = h;"
    " const g = c.getContext('2d'); g.drawImage(img, 0, 0);"
    " const d = g.getImageData(0, 0, w, h).data; let lo = 255, hi = 0;"
    " for (let i = 0; i < d.length; i += 4) { const y = (d[i] + d[i+1] + d[i+2]) / 3;"
    " lo = Math.min(lo, y); hi = Math.max(hi, y); } return hi - lo; })()"
)


async def test_dashboard_shows_every_stream_live(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async with dashboard(tmp_path, mosquitto) as page:
        await page.until("Object.keys(dashboardState.streams).length === 3", 30, "3 cards")
        await page.until(f"{LIVE}.every((v) => v.predictions >= 4 && v.plot)", 90,
                         "live predictions and a timeline per synthetic stream")  # fmt: skip
        await page.until(
            "document.querySelector('#card-hall .light.present') !== null",
            20,
            "a present light for hall",
        )
        seen = await page.cdp.js(
            "({cards: [...document.querySelectorAll('#grid .card')].map((c) => c.dataset.stream),"
            " labels: [...document.querySelectorAll('#grid .card .label')].map((e) =>"
            " e.textContent), canvases: [...document.querySelectorAll('#grid .card')].map((c) =>"
            " c.querySelectorAll('.timeline canvas').length),"
            " rates: [...document.querySelectorAll('#grid .card .rate')].map((e) => e.textContent),"
            " publish: [...document.querySelectorAll('#grid .card a.publish')].map((a) =>"
            " [a.closest('.card').dataset.stream, a.getAttribute('href')]),"
            " lights: Object.fromEntries([...document.querySelectorAll('#card-phone .light')]"
            ".map((e) => [e.textContent, e.className])),"
            " node: document.getElementById('node').textContent})"
        )
        first = await page.cdp.js(f"{LIVE}.map((v) => v.predictions)")
        await page.until(
            f"{LIVE}.every((v, i) => v.predictions > {first}[i])", 30, "the labels update"
        )
        shot = await page.screenshot("dashboard.png")
        # a stream paused over MQTT (P/N/S/set/enabled OFF) shows so on its card
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as c:
            await c.publish("streamer/dash/yard/set/enabled", b"OFF", qos=1)
        await page.until(
            "document.querySelector('#card-yard.disabled .paused:not([hidden])') !== null"
            " && document.querySelector('#card-yard .light.offline') !== null"
            " && document.querySelector('#card-hall.disabled') === null",
            20,
            "yard paused, its lights offline, hall not",
        )
    assert seen["node"] == "dash"
    assert seen["cards"] == ["hall", "yard", "phone"]
    assert all(lab in [str(d) for d in range(10)] for lab in seen["labels"][:2]), seen
    assert seen["canvases"][0] >= 1 and seen["canvases"][1] >= 1, seen
    assert seen["publish"] == [["phone", f"/publish?stream=phone&token={TOKEN}"]]
    # phone: no publisher (its text, the data channel's, reads as online)
    assert seen["lights"]["video"] == seen["lights"]["audio"] == "light offline", seen
    assert "windows/s" in seen["rates"][0] and " ms" in seen["rates"][0], seen
    assert shot.stat().st_size > 10_000


@pytest.mark.timeout(360)
async def test_dashboard_shows_frames_and_events(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """Needs ``GET /api/streams/{s}/latest.jpg`` (snapshots) and ``GET /api/events``
    (history): the newest frame is an image that is not blank, and an event of a
    synthetic stream whose truth changed is in the list with its snapshot."""
    async with dashboard(tmp_path, mosquitto) as page:
        what = "a frame per synthetic stream from /api/streams/{s}/latest.jpg"
        await page.until(f"{LIVE}.every((v) => v && v.frames >= 2)", 60, what)
        # AV-digits draws some segments at low contrast on purpose: measured over 6,000
        # segments, the faintest frame's luma spread is 9 once a JPEG at its natural size
        # (a blank or missing image: 0). So the newest frames are read as the page shows
        # them, segment after segment (3 s each), until one has a picture in it.
        spreads: list[float] = []
        deadline = time.monotonic() + 30
        while not spreads or spreads[-1] <= 30:
            assert time.monotonic() < deadline, f"the frames are blank (luma spreads {spreads})"
            spreads.append(await page.cdp.js(SPREAD))
            await asyncio.sleep(0.5)  # polling the page with a deadline
        await page.until(
            "[...document.querySelectorAll('#events li img')].some((i) => i.complete"
            " && i.naturalWidth > 0)",
            90,
            "an event in the list with its snapshot (GET /api/events)",
        )
        listed = await page.cdp.js(
            "dashboardState.events.map((e) => [e.stream, e.label, e.snapshot])"
        )
        await page.screenshot("dashboard-events.png")
        await page.cdp.js("document.querySelector('#events li').click()")
        await page.until("document.getElementById('detail').open", 10, "the event's detail")
        detail = await page.cdp.js("document.getElementById('d-fields').textContent")
        await page.screenshot("dashboard-event.png")
    assert any(s in ("hall", "yard") and snap for s, _, snap in listed), listed
    assert "peak" in detail and "modalities" in detail, detail
