"""WHIP ingest end to end, with a Python (aiortc) publisher and no browser.

``streamer run`` (a subprocess) serves HTTP on loopback and publishes to a real Mosquitto.
One scenario walks through the WHIP contract: 401 without or with a wrong token, 404 for
an unknown stream, 201 with an SDP answer and a Location, media and data-channel text
landing in predictions, 409 for a second publisher, PATCH 405, live events over SSE,
/metrics counters that move, DELETE freeing the stream, and a peer that just closes
marking its modalities offline.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import jsonschema
from conftest import Mosquitto, free_port, wait_port
from e2e_helpers import Traffic, check_predictions, collect, start_streamer, write_config
from prometheus_client.parser import text_string_to_metric_families
from webrtc_helpers import Publisher, loopback_only, webrtc_config

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _status(t: Traffic, stream: str, modality: str) -> str | None:
    return t.retained_last.get(f"streamer/web/{stream}/status/{modality}")


def _both(p: dict[str, Any]) -> bool:
    return bool(p["modalities"]["video"]["present"] and p["modalities"]["audio"]["present"])


Samples = dict[tuple[str, tuple[Any, ...]], float]


async def _metrics(http: aiohttp.ClientSession, base: str) -> Samples:
    async with http.get(f"{base}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def _first_event(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("data: "):
                event: dict[str, Any] = json.loads(line[6:])
                return event
    raise AssertionError("the event stream ended without an event")


async def test_whip_publish_text_events_metrics_and_release(
    tmp_path: Path, mosquitto: Mosquitto, prediction_schema: dict[str, Any]
) -> None:
    loopback_only()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    port = free_port()
    cfg = webrtc_config(mqtt_url=mosquitto.url, http_port=port, token_file=token_file)
    path = write_config(tmp_path / "cfg.yaml", cfg)
    log = tmp_path / "streamer.log"
    traffic = Traffic()
    base = f"http://127.0.0.1:{port}"
    proc = await start_streamer(log, "run", str(path))
    publishers: list[Publisher] = []
    try:
        async with (
            aiomqtt.Client("127.0.0.1", mosquitto.port) as client,
            aiohttp.ClientSession() as http,
        ):
            collector = asyncio.create_task(collect(client, "streamer", "web", traffic))
            await traffic.until(lambda t: t.online.is_set(), 60)
            await asyncio.to_thread(wait_port, port, 30)
            async with http.get(f"{base}/healthz") as resp:
                assert resp.status == 200 and (await resp.text()).strip() == "ok"
            # no publisher yet: the webrtc modalities are offline
            await traffic.until(lambda t: _status(t, "cam", "video") == "offline", 30)

            # 401 without a token and with a wrong one; 404 for a stream that is not webrtc
            for token, stream, want in ((None, "cam", 401), ("wrong", "cam", 401),
                                        (TOKEN, "nope", 404)):  # fmt: skip
                p = Publisher(base, stream)
                publishers.append(p)
                status, body, headers = await p.post(http, token)
                assert status == want, (status, body)
                if want == 401:
                    assert headers.get("WWW-Authenticate") == "Bearer"
                await p.close()
            async with http.get(f"{base}/api/config") as resp:
                assert resp.status == 401
            async with http.get(f"{base}/api/config", headers=AUTH) as resp:
                info = await resp.json()
            assert [s["id"] for s in info["streams"]] == ["cam", "mic"]
            assert info["ice_servers"] == []

            # 201: the answer, a Location, and media flowing
            pub = Publisher(base, "cam")
            publishers.append(pub)
            status, answer, headers = await pub.post(http, TOKEN)
            assert status == 201, answer
            assert headers["Content-Type"].startswith("application/sdp")
            assert answer.startswith("v=0") and "a=candidate" in answer
            assert pub.location is not None and pub.location.startswith("/whip/cam/")
            await asyncio.wait_for(pub.open.wait(), 30)
            await traffic.until(
                lambda t: (
                    _status(t, "cam", "video") == "online"
                    and _status(t, "cam", "audio") == "online"
                ),
                30,
            )
            await traffic.until(lambda t: any(_both(p) for p in t.predictions["cam"]), 30)

            # text typed into the data channel lands in the windows covering it
            sent_at = time.time()
            pub.channel.send("it is a seven")
            pub.channel.send(b"\xff\xfe not utf-8")  # counted as rejected, not fatal
            await traffic.until(
                lambda t: any(
                    p["modalities"]["text"]["present"]
                    and p["window"]["start"] < sent_at < p["window"]["end"]
                    for p in t.predictions["cam"]
                ),
                30,
            )
            await traffic.until(
                lambda t: any(s["streams"]["cam"]["rejected_by"].get("not_utf8") for s in t.stats),
                30,
            )

            # a second publisher for the busy stream: 409; trickle ICE: 405
            busy = Publisher(base, "cam")
            publishers.append(busy)
            status, body, _ = await busy.post(http, TOKEN)
            assert status == 409, (status, body)
            await busy.close()
            async with http.patch(base + pub.location, headers=AUTH) as resp:
                assert resp.status == 405

            # live predictions over SSE (token as a query parameter, as EventSource does)
            events_url = f"{base}/events/cam?token={TOKEN}"
            event = await asyncio.wait_for(_first_event(http, events_url), 30)
            jsonschema.validate(event, prediction_schema)
            assert event["stream"] == "cam"
            async with http.get(f"{base}/events/cam") as resp:
                assert resp.status == 401

            # /metrics: prometheus-client parses it and the counters move
            m1 = await _metrics(http, base)
            before = m1[("streamer_windows_out_total", (("stream", "cam"),))]
            await traffic.until(lambda t: len(t.predictions["cam"]) >= before + 3, 30)
            m2 = await _metrics(http, base)
            assert m2[("streamer_windows_out_total", (("stream", "cam"),))] > before
            video_in = ("streamer_frames_in_total", (("modality", "video"), ("stream", "cam")))
            assert m2[video_in] > m1[video_in] > 0
            assert m2[("streamer_broker_connected", ())] == 1.0
            assert ("streamer_outbox_depth", ()) in m2
            assert m2[("streamer_webrtc_publishers", ())] == 1.0
            assert m2[("streamer_end_to_publish_seconds_count", (("stream", "cam"),))] > 0
            assert m2[("streamer_inference_seconds_count", (("stream", "cam"),))] > 0
            assert m2[("streamer_rejected_total", (("kind", "not_utf8"), ("stream", "cam")))] >= 1

            # DELETE ends the session: offline, and the stream is free again
            assert await pub.delete(http, TOKEN) == 200
            await traffic.until(lambda t: _status(t, "cam", "video") == "offline", 30)
            assert await pub.delete(http, TOKEN) == 404
            await pub.close()
            again = Publisher(base, "cam")
            publishers.append(again)
            status, body, _ = await again.post(http, TOKEN)
            assert status == 201, (status, body)
            await asyncio.wait_for(again.open.wait(), 30)
            await traffic.until(lambda t: _status(t, "cam", "video") == "online", 30)
            # a peer that just goes away (no DELETE) frees the stream too
            await again.close()
            await traffic.until(lambda t: _status(t, "cam", "video") == "offline", 30)
            check_predictions(traffic.predictions["cam"], prediction_schema, hop=0.5, length=2.0)
            collector.cancel()
    finally:
        for p in publishers:
            await p.close()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(proc.wait(), 30)
    assert rc == 0, log.read_text()[-3000:]
