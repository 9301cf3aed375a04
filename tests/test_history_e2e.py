"""The event history end to end: ``streamer run`` on a live AV-digits stream against a
real Mosquitto, with ``http:`` (a token) and ``history.dir``. An event that ended on MQTT
is served by ``/api/events`` and ``/api/events/{id}`` (not without the token), the stats
message counts the history, and after a stop the file holds every event the node
announced, each ended (what was open at the stop: ``stopped``). An event's snapshot is
served with it.

Every wait is on a message or polls with a deadline.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
from conftest import Mosquitto, free_port
from e2e_helpers import run_node
from test_events_e2e import events, live_config
from test_mqtt_discovery import Recorder, recording
from test_snapshots import decode

from streamer.history import db as sql
from streamer.history.settings import HistoryConfig
from streamer.history.store import EventStore

T = 60.0


async def served(http: aiohttp.ClientSession, url: str, eid: str) -> list[dict[str, Any]]:
    """/api/events once it has the ended event ``eid`` (the writer is a thread: poll)."""
    async with asyncio.timeout(T):
        while True:
            async with http.get(url) as r:
                assert r.status == 200, await r.text()
                got: list[dict[str, Any]] = (await r.json())["events"]
            if any(e["id"] == eid and e["end"] is not None for e in got):
                return got
            await asyncio.sleep(0.1)  # polling the HTTP API, bounded by the timeout


def history_stats(rec: Recorder, base: str) -> dict[str, int] | None:
    for p in reversed(rec.payloads(f"{base}/stats")):
        h: dict[str, int] | None = json.loads(p).get("history")
        if h is not None and h["rows"] > 0:
            return h
    return None


async def test_a_live_nodes_events_are_served_and_kept(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    base, port = "streamer/hist", free_port()
    (tmp_path / "token").write_text("t0ken\n")
    cfg = live_config(
        "hist", mosquitto.url, 1.0,
        http={"listen": f"127.0.0.1:{port}", "token_file": str(tmp_path / "token")},
        history={"dir": str(tmp_path / "history")},
    )  # fmt: skip
    api = f"http://127.0.0.1:{port}/api/events"
    async with recording(mosquitto.port, [f"{base}/#"]) as rec:
        async with run_node(tmp_path, cfg, mosquitto.port) as run:
            await rec.until_true(
                lambda r: any(m["type"] == "end" for _, m in events(r, f"{base}/cam"))
            )
            end = next(m["event"] for _, m in events(rec, f"{base}/cam") if m["type"] == "end")
            async with aiohttp.ClientSession() as http:
                got = await served(http, f"{api}?stream=cam&token=t0ken", end["id"])
                assert [e["start"] for e in got] == sorted((e["start"] for e in got), reverse=True)
                async with http.get(f"{api}/{end['id']}",
                                    headers={"Authorization": "Bearer t0ken"}) as r:  # fmt: skip
                    one = await r.json()
                assert {**one, "snapshot": None} == {**end, "snapshot": None}
                # the event's peak JPEG is kept with it: the one MQTT carried for it
                assert one["snapshot"] == f"/api/events/{end['id']}/snapshot.jpg"
                async with http.get(f"http://127.0.0.1:{port}{one['snapshot']}?token=t0ken") as r:
                    assert r.status == 200 and r.content_type == "image/jpeg"
                    jpeg = await r.read()
                assert decode(jpeg).shape[2] == 3  # a picture (what MQTT carried may be
                # a newer one: the outbox keeps only a stream's newest unsent snapshot)
                async with http.get(api) as r:
                    assert r.status == 401
            await rec.until_true(lambda r: history_stats(r, base) is not None)
        assert run.rc == 0, run.log.read_text()
        await rec.until_true(lambda r: r.payloads(f"{base}/available")[-1:] == [b"stopped"])
    h = history_stats(rec, base)
    assert h is not None and h["dropped"] == 0 and h["errors"] == 0 and h["bytes"] > 0
    announced = {m["event"]["id"]: m["event"] for _, m in events(rec, f"{base}/cam")}
    store = EventStore(HistoryConfig(dir=tmp_path / "history"))
    store.open()  # the same file, after the node's exit: the lock is free again
    try:
        kept = {
            e["id"]: e
            for e in (
                json.loads(t) for t, _ in await store.read(lambda db: sql.query(db, limit=1000))
            )
        }
    finally:
        await store.aclose()
    assert kept.keys() == announced.keys()
    for eid, e in kept.items():
        assert e == announced[eid]  # the last message of each, as MQTT carried it
        assert e["end"] is not None and e["reason"] in ("cooldown", "stopped")
