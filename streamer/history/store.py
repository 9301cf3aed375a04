"""The event history: the events' transitions and their snapshots kept in SQLite.

::

    tracker listener --record(message, jpeg)--> pending (by event id, bounded)
        --one thread: a batch in one transaction, then retention--> events.sqlite3
    HTTP handlers --await query(...)--> the same thread, ahead of the writes --> rows

One thread owns the one connection, for the writes and the reads alike: an in-memory
database lives in its connection, so this is the one design that serves ``dir`` absent
and present the same way, and SQLite never has to arbitrate between connections (no
``SQLITE_BUSY``). A read waits for at most the batch being written (milliseconds).

``record`` never blocks: what is pending is keyed by event id, so a later message of the
same event replaces the earlier one (an upsert of the latest JSON is the same row; a
JPEG given stays until another replaces it). At most ``max_pending`` events wait; one
more drops the oldest pending (``dropped``). Retention runs after every batch and at
open: ended events whose ``start`` is older than ``max_age_days`` (``evicted_age``),
then the oldest by start, ended ones first, until the events' JSON plus their JPEGs fit
``max_bytes`` (``evicted_size``). Open events are at most the tracker's (streams x
``events.max_labels``); one is removed for size only when no ended one is left. The file
is larger than ``bytes`` by SQLite's pages and indexes; freed pages go back to the file
system (incremental auto-vacuum), so it stays bounded too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from streamer.dirlock import lock_dir
from streamer.errors import ConfigError, StreamerError
from streamer.events.event import EventMessage
from streamer.history import db as sql
from streamer.history.settings import HistoryConfig

log = logging.getLogger(__name__)

FILE = "events.sqlite3"
LOCK = "events.lock"
MAX_PENDING = 10_000
MAX_READS = 256  # queries waiting at once; beyond: StoreBusy (HTTP 503)
BATCH = 500  # events written per transaction
T = TypeVar("T")


class StoreBusy(StreamerError):
    pass


class EventStore:
    def __init__(
        self,
        cfg: HistoryConfig,
        *,
        now: Callable[[], float] = time.time,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.cfg = cfg
        self.now = now  # epoch seconds, the clock of the events' times
        self.max_pending = max_pending
        self.path = None if cfg.dir is None else cfg.dir / FILE
        self.counts: Counter[str] = Counter()  # recorded, dropped, evicted_*, errors
        self._totals = sql.Totals()
        self._pending: dict[str, tuple[dict[str, Any], bytes | None]] = {}
        self._reads: list[tuple[Callable[[sqlite3.Connection], Any], Future[Any]]] = []
        self._cond = threading.Condition()
        self._busy = False
        self._closing = False
        self._db: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._thread: threading.Thread | None = None

    # -- open and close ------------------------------------------------------------------
    def open(self) -> None:
        """Open (or create) the database, close what a crashed run left open, apply the
        retention, start the thread. ConfigError naming ``history.dir`` when the
        directory cannot be made or another process holds it."""
        if self.path is None:
            self._db = sql.connect(":memory:")
        else:
            self._lock_fd = lock_dir(self.path.parent, LOCK, "history.dir")
            self._db = self._connect_file(self.path)
        closed = sql.close_crashed(self._db)
        if closed:
            log.info("history: %d events left open by an earlier run closed (stopped)", closed)
        self._totals = sql.totals(self._db)
        self._retain()
        self._thread = threading.Thread(target=self._loop, name="event-history", daemon=True)
        self._thread.start()

    def _connect_file(self, path: Path) -> sqlite3.Connection:
        """A file that is not a database, or a malformed one, is moved aside to
        ``events.sqlite3.corrupt`` (one kept) and a fresh one started."""
        try:
            db = sql.connect(str(path))
            sql.totals(db)  # reads every row of events: a malformed table shows here
            return db
        except sqlite3.DatabaseError as e:
            aside = path.with_name(FILE + ".corrupt")
            log.error("history: %s is unreadable (%s): moved to %s, starting empty",
                      path, e, aside.name)  # fmt: skip
            try:
                os.replace(path, aside)
                for tail in ("-wal", "-shm"):
                    Path(str(path) + tail).unlink(missing_ok=True)
                return sql.connect(str(path))
            except (OSError, sqlite3.DatabaseError) as e2:
                self._unlock()
                raise ConfigError("history.dir", f"{path}: {e2}") from None
        except OSError as e:  # unreachable in practice: sqlite raises DatabaseError
            self._unlock()
            raise ConfigError("history.dir", f"{path}: {e}") from None

    def close(self) -> None:
        """Write what is pending, stop the thread, close the database (blocking)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._db is not None:
            self._db.close()
            self._db = None
        self._unlock()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- the writer side -----------------------------------------------------------------
    def record(self, message: EventMessage, jpeg: bytes | None) -> None:
        """Queue the event's latest state (and its snapshot); never blocks."""
        ev = message.event
        eid = str(ev["id"])
        with self._cond:
            if self._closing:
                self.counts["dropped"] += 1
                return
            old = self._pending.pop(eid, None)
            if old is None and len(self._pending) >= self.max_pending:
                del self._pending[next(iter(self._pending))]  # the oldest waiting
                self.counts["dropped"] += 1
            if jpeg is None and old is not None:
                jpeg = old[1]
            self._pending[eid] = (ev, jpeg)
            self.counts["recorded"] += 1
            self._cond.notify()

    def counters(self) -> dict[str, int]:
        keys = ("recorded", "dropped", "evicted_age", "evicted_size", "errors")
        return {
            **{k: self.counts[k] for k in keys},
            "pending": len(self._pending),
            "rows": self._totals.rows,
            "bytes": self._totals.bytes,
        }

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._busy = False
                self._cond.notify_all()  # flush() waits for idle
                while not self._pending and not self._reads and not self._closing:
                    self._cond.wait()
                if self._closing and not self._pending and not self._reads:
                    return
                reads, self._reads = self._reads, []
                batch = []
                for _ in range(min(BATCH, len(self._pending))):
                    eid = next(iter(self._pending))
                    batch.append(self._pending.pop(eid))
                self._busy = True
            for fn, fut in reads:
                self._answer(fn, fut)
            if batch:
                self._write(batch)

    def _answer(self, fn: Callable[[sqlite3.Connection], Any], fut: Future[Any]) -> None:
        assert self._db is not None
        if not fut.set_running_or_notify_cancel():
            return
        try:
            fut.set_result(fn(self._db))
        except Exception as e:  # the caller's to raise
            fut.set_exception(e)

    def _write(self, batch: list[tuple[dict[str, Any], bytes | None]]) -> None:
        assert self._db is not None
        before = sql.Totals(self._totals.rows, self._totals.bytes)
        try:
            self._db.execute("BEGIN")
            for ev, jpeg in batch:
                sql.upsert(self._db, ev, jpeg, self._totals)
            self._retain()
            self._db.execute("COMMIT")
        except (sqlite3.Error, KeyError, TypeError, ValueError) as e:
            self.counts["errors"] += len(batch)
            self._totals = before
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            log.error("history: %d events not written: %s", len(batch), e)
            return
        self._vacuum()

    def _retain(self) -> None:
        assert self._db is not None
        cutoff = self.now() - self.cfg.max_age_days * 86400.0
        self.counts["evicted_age"] += sql.evict_age(self._db, cutoff, self._totals)
        self.counts["evicted_size"] += sql.evict_size(self._db, self.cfg.max_bytes, self._totals)

    def _vacuum(self) -> None:
        assert self._db is not None
        try:  # give the freed pages back (a no-op when none are free)
            self._db.execute("PRAGMA incremental_vacuum").fetchall()
        except sqlite3.Error as e:
            log.warning("history: incremental vacuum failed: %s", e)

    # -- the reader side -----------------------------------------------------------------
    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the store's connection in its thread (ahead of pending writes)."""
        fut: Future[T] = Future()
        with self._cond:
            if self._closing or self._thread is None:
                raise StoreBusy("the event history is closed")
            if len(self._reads) >= MAX_READS:
                self.counts["reads_refused"] += 1
                raise StoreBusy(f"{MAX_READS} history queries already waiting")
            self._reads.append((fn, fut))
            self._cond.notify()
        return await asyncio.wrap_future(fut)

    async def flush(self) -> None:
        """Wait until what was recorded before the call is written."""
        await asyncio.to_thread(self._wait_idle)

    def _wait_idle(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: not self._pending and not self._busy or self._closing)
