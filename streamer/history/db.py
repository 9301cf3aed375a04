"""The event history's SQLite schema and its synchronous operations (run by the store's
one thread, :mod:`streamer.history.store`).

::

    events(id PK, stream, label, run, start, end, last, json, size, has_snapshot)
        indexes: start; (stream, start); (label, start)
    snapshots(id PK -> events.id, jpeg)

``json`` is the whole event JSON of its latest message; ``size`` is what the event
costs against ``history.max_bytes``: the JSON's bytes plus its JPEG's. ``last`` is the
latest event time the messages said (its end, else its peak, else its start): a run that
crashed left its events open, and the next open closes them at ``last`` ("stopped").
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS events ("
    " id TEXT PRIMARY KEY, stream TEXT NOT NULL, label TEXT NOT NULL, run TEXT NOT NULL,"
    " start REAL NOT NULL, end REAL, last REAL NOT NULL, json TEXT NOT NULL,"
    " size INTEGER NOT NULL, has_snapshot INTEGER NOT NULL DEFAULT 0)",
    "CREATE INDEX IF NOT EXISTS events_start ON events(start)",
    "CREATE INDEX IF NOT EXISTS events_stream ON events(stream, start)",
    "CREATE INDEX IF NOT EXISTS events_label ON events(label, start)",
    "CREATE TABLE IF NOT EXISTS snapshots (id TEXT PRIMARY KEY, jpeg BLOB NOT NULL)",
)
EVICT_CHUNK = 256  # rows removed per statement when over max_bytes


@dataclass(slots=True)
class Totals:
    rows: int = 0
    bytes: int = 0  # sum of size


def connect(target: str) -> sqlite3.Connection:
    """Open ``target`` (a path, or ``:memory:``), create the schema; DatabaseError when
    the file is not a database or is malformed."""
    db = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # only takes on a new file
        if target != ":memory:":
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
        for stmt in SCHEMA:
            db.execute(stmt)
    except sqlite3.DatabaseError:
        db.close()
        raise
    return db


def totals(db: sqlite3.Connection) -> Totals:
    rows, size = db.execute("SELECT count(*), coalesce(sum(size), 0) FROM events").fetchone()
    return Totals(int(rows), int(size))


def close_crashed(db: sqlite3.Connection) -> int:
    """End the events an earlier run left open: at their last known time, "stopped"."""
    rows = db.execute("SELECT id, json, last FROM events WHERE end IS NULL").fetchall()
    for eid, text, last in rows:
        ev = json.loads(text)
        ev["end"], ev["reason"] = max(float(last), float(ev["start"])), "stopped"
        new = _dumps(ev)
        db.execute(
            "UPDATE events SET end = ?, json = ?, size = size - length(CAST(json AS BLOB))"
            " + length(CAST(? AS BLOB)) WHERE id = ?",
            (ev["end"], new, new, eid),
        )
    return len(rows)


def upsert(db: sqlite3.Connection, ev: dict[str, Any], jpeg: bytes | None, t: Totals) -> None:
    """Insert or replace the event's row (and its snapshot when ``jpeg``), keeping ``t``."""
    text = _dumps(ev)
    eid = str(ev["id"])
    old = db.execute("SELECT size, has_snapshot FROM events WHERE id = ?", (eid,)).fetchone()
    snap = 0
    if old is not None and old[1]:
        (snap,) = db.execute("SELECT length(jpeg) FROM snapshots WHERE id = ?", (eid,)).fetchone()
    if jpeg is not None:
        db.execute("INSERT OR REPLACE INTO snapshots (id, jpeg) VALUES (?, ?)", (eid, jpeg))
        snap = len(jpeg)
    end = ev.get("end")
    last = max(float(x) for x in (ev["start"], ev.get("peak_time") or ev["start"], end or 0.0))
    size = len(text.encode()) + snap
    db.execute(
        "INSERT INTO events (id, stream, label, run, start, end, last, json, size, has_snapshot)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET"
        " stream = excluded.stream, label = excluded.label, run = excluded.run,"
        " start = excluded.start, end = excluded.end, last = excluded.last,"
        " json = excluded.json, size = excluded.size, has_snapshot = excluded.has_snapshot",
        (eid, ev["stream"], ev["label"], ev["run"], ev["start"], end, last, text, size,
         int(snap > 0)),
    )  # fmt: skip
    if old is None:
        t.rows += 1
        t.bytes += size
    else:
        t.bytes += size - int(old[0])


def evict_age(db: sqlite3.Connection, cutoff: float, t: Totals) -> int:
    """Remove the ended events that started before ``cutoff``; how many."""
    return _remove(db, "end IS NOT NULL AND start < ?", (cutoff,), t)


def evict_size(db: sqlite3.Connection, max_bytes: int, t: Totals) -> int:
    """Remove the oldest events (by start; ended ones first, open ones only when no ended
    one is left) until ``t.bytes <= max_bytes``; how many."""
    n = 0
    while t.bytes > max_bytes and t.rows > 0:
        over = t.bytes - max_bytes
        ids = db.execute(
            "SELECT id, size FROM events ORDER BY end IS NULL, start, id LIMIT ?",
            (EVICT_CHUNK,),
        ).fetchall()
        chosen, freed = [], 0
        for eid, size in ids:  # just enough of the oldest
            chosen.append(eid)
            freed += int(size)
            if freed >= over:
                break
        marks = ",".join("?" * len(chosen))
        n += _remove(db, f"id IN ({marks})", tuple(chosen), t)
    return n


def _remove(db: sqlite3.Connection, where: str, args: tuple[Any, ...], t: Totals) -> int:
    rows, size = db.execute(
        f"SELECT count(*), coalesce(sum(size), 0) FROM events WHERE {where}", args
    ).fetchone()
    if not rows:
        return 0
    db.execute(f"DELETE FROM snapshots WHERE id IN (SELECT id FROM events WHERE {where})", args)
    db.execute(f"DELETE FROM events WHERE {where}", args)
    t.rows -= int(rows)
    t.bytes -= int(size)
    return int(rows)


def query(
    db: sqlite3.Connection,
    *,
    stream: str | None = None,
    label: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int = 100,
) -> list[tuple[str, bool]]:
    """(event JSON text, has a snapshot) newest first by start, filtered."""
    where, args = ["1"], []
    for col, op, v in (("stream", "=", stream), ("label", "=", label),
                       ("start", ">=", since), ("start", "<=", until)):  # fmt: skip
        if v is not None:
            where.append(f"{col} {op} ?")
            args.append(v)
    rows = db.execute(
        f"SELECT json, has_snapshot FROM events WHERE {' AND '.join(where)}"
        " ORDER BY start DESC, id DESC LIMIT ?",
        (*args, limit),
    ).fetchall()
    return [(str(text), bool(snap)) for text, snap in rows]


def get(db: sqlite3.Connection, eid: str) -> tuple[str, bool] | None:
    row = db.execute("SELECT json, has_snapshot FROM events WHERE id = ?", (eid,)).fetchone()
    return None if row is None else (str(row[0]), bool(row[1]))


def snapshot(db: sqlite3.Connection, eid: str) -> bytes | None:
    row = db.execute("SELECT jpeg FROM snapshots WHERE id = ?", (eid,)).fetchone()
    return None if row is None else bytes(row[0])


def _dumps(ev: dict[str, Any]) -> str:
    return json.dumps(ev, separators=(",", ":"), allow_nan=False)
