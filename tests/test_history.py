"""The event history (streamer.history): the store on a real SQLite file and in memory,
its retention on explicit times, a crashed run's open events, a corrupt file, a full
queue, and /api/events through the node's own WebServer routes (token rules included).

``test_measure`` prints the writer's rows/s, bytes per row and /api/events at 10,000
events (``-s``); it asserts only what must hold, not the times.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp.test_utils import TestClient, TestServer

from streamer.config import HttpConfig, parse_config
from streamer.errors import ConfigError
from streamer.events.event import EventMessage
from streamer.history import db as sql
from streamer.history.settings import MIB, HistoryConfig
from streamer.history.store import FILE, EventStore
from streamer.web.events import LiveEvents
from streamer.web.server import WebServer

T0 = 1_700_000_000.0
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8 + b"\xff\xd9"


def event(eid: str, start: float, *, stream: str = "cam", label: str = "dog",
          end: float | None = None, peak: float = 0.9) -> dict[str, Any]:  # fmt: skip
    return {
        "schema": "streamer.event/1", "id": eid, "node": "n", "stream": stream, "run": "r1",
        "label": label, "start": start, "end": end, "peak_score": peak,
        "peak_time": start + 1.0, "windows": 3,
        "modalities": {m: {"present": True, "fraction": 1.0, "supported": None}
                       for m in ("video", "audio", "text")},
        "reason": None if end is None else "cooldown",
    }  # fmt: skip


def msg(kind: str, ev: dict[str, Any]) -> EventMessage:
    return EventMessage(kind, ev)  # type: ignore[arg-type]


async def opened(cfg: HistoryConfig, now: float = T0, **kw: Any) -> EventStore:
    store = EventStore(cfg, now=lambda: now, **kw)
    store.open()
    return store


async def rows(store: EventStore, **q: Any) -> list[dict[str, Any]]:
    return [json.loads(t) for t, _ in await store.read(lambda db: sql.query(db, **q))]


async def test_new_update_end_keep_one_row_with_the_final_json(tmp_path: Path) -> None:
    store = await opened(HistoryConfig(dir=tmp_path / "h"))
    ev = event("a", T0)
    store.record(msg("new", ev), None)
    await store.flush()
    assert (await rows(store))[0]["end"] is None
    store.record(msg("update", {**ev, "peak_score": 0.95}), JPEG)
    store.record(msg("end", {**ev, "peak_score": 0.95, "end": T0 + 5, "reason": "cooldown"}), None)
    await store.flush()
    got = await rows(store)
    assert len(got) == 1 and got[0]["end"] == T0 + 5 and got[0]["peak_score"] == 0.95
    assert await store.read(lambda db: sql.snapshot(db, "a")) == JPEG  # kept by the end
    c = store.counters()
    assert c["rows"] == 1 and c["recorded"] == 3 and c["dropped"] == 0
    assert c["bytes"] == len(json.dumps(got[0], separators=(",", ":"))) + len(JPEG)
    await store.aclose()
    assert (tmp_path / "h" / FILE).is_file()


async def test_filters_order_and_limit() -> None:
    store = await opened(HistoryConfig())
    for i in range(10):
        ev = event(f"e{i}", T0 + i, stream="cam" if i % 2 else "door",
                   label="dog" if i < 5 else "cat", end=T0 + i + 0.5)  # fmt: skip
        store.record(msg("end", ev), None)
    await store.flush()
    assert [e["id"] for e in await rows(store)] == [f"e{i}" for i in range(9, -1, -1)]
    assert [e["id"] for e in await rows(store, stream="cam", label="dog")] == ["e3", "e1"]
    assert [e["id"] for e in await rows(store, since=T0 + 3, until=T0 + 6)] == [
        "e6", "e5", "e4", "e3"
    ]  # fmt: skip
    assert [e["id"] for e in await rows(store, limit=2)] == ["e9", "e8"]
    await store.aclose()


async def test_retention_by_age_and_by_size_counts_what_it_removed() -> None:
    day = 86400.0
    store = await opened(HistoryConfig(max_age_days=1), now=T0 + 10 * day)
    store.record(msg("end", event("old", T0, end=T0 + 1)), None)  # 10 days old
    store.record(msg("new", event("old-open", T0)), None)  # open: never aged out
    store.record(msg("end", event("fresh", T0 + 10 * day - 60, end=T0 + 10 * day)), None)
    await store.flush()
    assert {e["id"] for e in await rows(store)} == {"old-open", "fresh"}
    assert store.counters()["evicted_age"] == 1
    await store.aclose()

    store = await opened(HistoryConfig(max_bytes=MIB))
    big = b"\xff\xd8" + b"x" * (300 * 1024)
    store.record(msg("new", event("open", T0 - 100)), big)  # the oldest, but open
    for i in range(5):
        store.record(msg("end", event(f"s{i}", T0 + i, end=T0 + i + 1)), big)
    await store.flush()
    c = store.counters()
    left = {e["id"] for e in await rows(store)}
    assert c["bytes"] <= MIB and c["evicted_size"] == 3 and c["rows"] == 3
    assert left == {"open", "s3", "s4"}  # the oldest ended ones went first
    await store.aclose()


async def test_a_restart_keeps_the_history_and_closes_a_crashed_runs_open_event(
    tmp_path: Path,
) -> None:
    cfg = HistoryConfig(dir=tmp_path)
    store = await opened(cfg)
    store.record(msg("end", event("done", T0, end=T0 + 2)), None)
    store.record(msg("update", event("open", T0 + 10)), JPEG)
    await store.flush()
    await store.aclose()  # as a crash leaves it: the tracker never ended "open"
    again = await opened(cfg)
    got = {e["id"]: e for e in await rows(again)}
    assert got["done"]["reason"] == "cooldown"
    assert got["open"]["end"] == T0 + 11 and got["open"]["reason"] == "stopped"  # its peak
    assert await again.read(lambda db: sql.snapshot(db, "open")) == JPEG
    assert again.counters()["rows"] == 2
    assert again.counters()["bytes"] == sum(
        len(json.dumps(e, separators=(",", ":"))) for e in got.values()
    ) + len(JPEG)
    await again.aclose()


async def test_a_corrupt_file_is_moved_aside_and_a_busy_dir_is_a_config_error(
    tmp_path: Path,
) -> None:
    (tmp_path / FILE).write_bytes(b"this is not a database at all" * 100)
    store = await opened(HistoryConfig(dir=tmp_path))
    assert (tmp_path / (FILE + ".corrupt")).read_bytes().startswith(b"this is not")
    store.record(msg("new", event("a", T0)), None)
    await store.flush()
    assert len(await rows(store)) == 1
    with pytest.raises(ConfigError, match=r"^history\.dir: .* in use by another streamer"):
        EventStore(HistoryConfig(dir=tmp_path)).open()
    await store.aclose()
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"^history\.dir: .*file/sub: Not a directory"):
        EventStore(HistoryConfig(dir=tmp_path / "file" / "sub")).open()
    with pytest.raises(ConfigError, match=r"history\.dir"):
        parse_config({"streams": [{"id": "a", "video": "synthetic:"}],
                      "history": {"dir": str(tmp_path / "file")}})  # fmt: skip
    with pytest.raises(ConfigError, match=r"history\.max_bytes"):
        parse_config({"streams": [{"id": "a", "video": "synthetic:"}],
                      "history": {"max_bytes": 10}})  # fmt: skip


async def test_a_full_queue_drops_the_oldest_pending_and_counts_it() -> None:
    store = EventStore(HistoryConfig(), max_pending=3)  # not opened: nothing is written
    for i in range(5):
        store.record(msg("new", event(f"e{i}", T0 + i)), None)
    store.record(msg("update", event("e4", T0 + 4)), JPEG)  # the same event: replaced
    assert store.counters()["dropped"] == 2 and store.counters()["pending"] == 3
    assert list(store._pending) == ["e2", "e3", "e4"] and store._pending["e4"][1] == JPEG


# -- HTTP ---------------------------------------------------------------------------------
@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[TestClient[Any, Any], EventStore]]:
    (tmp_path / "token").write_text("s3cret\n")
    store = await opened(HistoryConfig())
    store.record(msg("end", event("a", T0, end=T0 + 2)), JPEG)
    store.record(msg("new", event("b", T0 + 10, label="cat")), None)
    await store.flush()
    web = WebServer(
        HttpConfig(listen="127.0.0.1:0", token_file=tmp_path / "token"), node="n",
        streams=[], all_streams=[], whip=cast(Any, None), events=LiveEvents(),
        metrics=cast(Any, None), store=store,
    )  # fmt: skip
    async with TestClient(TestServer(web.app())) as c:
        yield c, store
    await store.aclose()


async def test_http_api_lists_events_with_snapshot_links_and_serves_the_jpeg(
    client: tuple[TestClient[Any, Any], EventStore],
) -> None:
    c, _ = client
    auth = {"Authorization": "Bearer s3cret"}
    r = await c.get("/api/events", headers=auth)
    body = await r.json()
    assert r.status == 200 and body["count"] == 2
    assert [e["id"] for e in body["events"]] == ["b", "a"]
    assert body["events"][0]["snapshot"] is None
    assert body["events"][1]["snapshot"] == "/api/events/a/snapshot.jpg"
    r = await c.get("/api/events", params={"label": "dog", "token": "s3cret"})
    assert [e["id"] for e in (await r.json())["events"]] == ["a"]
    r = await c.get("/api/events/a", headers=auth)
    assert (await r.json())["end"] == T0 + 2
    r = await c.get("/api/events/a/snapshot.jpg?token=s3cret")  # as an <img> asks
    assert r.status == 200 and r.content_type == "image/jpeg" and await r.read() == JPEG


@pytest.mark.parametrize(
    ("path", "status", "text"),
    [
        ("/api/events", 401, "missing or wrong bearer token"),
        ("/api/events?token=wrong", 401, "missing or wrong bearer token"),
        ("/api/events/a/snapshot.jpg", 401, "missing or wrong bearer token"),
        ("/api/events?token=s3cret&limit=0", 400, "limit: expected an integer 1-1000"),
        ("/api/events?token=s3cret&limit=1001", 400, "limit: expected an integer 1-1000"),
        ("/api/events?token=s3cret&since=soon", 400, "since: expected epoch seconds"),
        ("/api/events?token=s3cret&until=nan", 400, "until: expected epoch seconds"),
        ("/api/events?token=s3cret&since=2&until=1", 400, "since is after until"),
        ("/api/events?token=s3cret&colour=red", 400, "unknown parameter 'colour'"),
        ("/api/events?token=s3cret&stream=", 400, "stream: expected 1-256 characters"),
        ("/api/events/zzz?token=s3cret", 404, "no event 'zzz'"),
        ("/api/events/b/snapshot.jpg?token=s3cret", 404, "no snapshot of event 'b'"),
    ],
)
async def test_http_api_refuses_what_it_must(
    client: tuple[TestClient[Any, Any], EventStore], path: str, status: int, text: str
) -> None:
    r = await client[0].get(path)
    assert r.status == status and text in await r.text()


async def test_http_api_without_events_configured_is_a_404() -> None:
    web = WebServer(
        HttpConfig(listen="127.0.0.1:0"), node="n", streams=[], all_streams=[],
        whip=cast(Any, None), events=LiveEvents(), metrics=cast(Any, None),
    )  # fmt: skip
    async with TestClient(TestServer(web.app())) as c:
        for path in ("/api/events", "/api/events/a", "/api/events/a/snapshot.jpg"):
            r = await c.get(path)
            assert r.status == 404 and "no event history: configure events:" in await r.text()


async def test_measure(tmp_path: Path) -> None:
    """Rows/s the writer sustains (a file, WAL), bytes per row, /api/events at 10,000."""
    store = await opened(HistoryConfig(dir=tmp_path), max_pending=20_000)
    n = 10_000
    t = time.perf_counter()
    for i in range(n):
        store.record(msg("end", event(f"{i:032x}", T0 + i, end=T0 + i + 3)), None)
    await store.flush()
    rate = n / (time.perf_counter() - t)
    c = store.counters()
    assert c["rows"] == n and c["dropped"] == 0 and c["errors"] == 0
    web = WebServer(
        HttpConfig(listen="127.0.0.1:0"), node="n", streams=[], all_streams=[],
        whip=cast(Any, None), events=LiveEvents(), metrics=cast(Any, None), store=store,
    )  # fmt: skip
    async with TestClient(TestServer(web.app())) as client:
        times = {}
        for q in ("limit=100", "limit=1000", "label=dog&stream=cam&limit=100"):
            t = time.perf_counter()
            for _ in range(10):
                r = await client.get(f"/api/events?{q}")
                assert r.status == 200 and (await r.json())["count"] > 0
            times[q] = round((time.perf_counter() - t) * 100, 2)  # ms per request
    await store.aclose()
    size = (tmp_path / FILE).stat().st_size
    print(f"\nhistory: writer {rate:.0f} rows/s; {c['bytes'] / n:.0f} B/row counted, "
          f"{size / n:.0f} B/row in the file; GET /api/events ms at {n}: {times}")  # fmt: skip


def test_each_worker_gets_its_own_history_dir(tmp_path: Path) -> None:
    from streamer.app.supervisor import Supervisor

    cfg = parse_config({
        "streams": [{"id": "a", "video": "synthetic:"}, {"id": "b", "video": "synthetic:"}],
        "events": {}, "history": {"dir": str(tmp_path / "h")},
    })  # fmt: skip
    sup = Supervisor(cfg, "cfg.yaml", [], workers=2)
    for i in range(2):
        args = sup._args(i, "mqtt://127.0.0.1:1883")
        assert f"history.dir={tmp_path / 'h' / f'worker{i}'}" in args
