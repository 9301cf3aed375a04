"""The outbox on disk (``mqtt.outbox_dir``): what the broker has not acknowledged, kept
across a stop, a crash or a SIGKILL (SQLite, one file, one node at a time).

Rows are keyed by the outbox's sequence numbers. While the process runs, the publisher
*journals* (:meth:`Spool.sync`, every ``JOURNAL_S`` seconds, off the event loop): each
message still unacknowledged one tick after it was queued is written, and rows the broker
has acknowledged since (or the full outbox gave up) are deleted. A healthy broker acks
within milliseconds, so nothing is written then; during an outage what is pending reaches
the disk within a second, and a SIGKILL loses at most that last second. At a clean
shutdown :meth:`save` replaces the rows with everything still undelivered, in one
transaction; at the next start :meth:`load` gives them back, oldest first, renumbered
from 0 (the new outbox's numbers), and the publisher sends them ahead of anything new.
Rows stay until acknowledged, so a crash re-sends rather than loses (duplicates,
detectable by run, stream and seq). Only non-retained QoS >= 1 messages (predictions)
are kept: retained state and stats belong to the run that made them.

A disk that fails (read-only, full, gone) raises :class:`SpoolError`, one line: the
in-memory outbox still holds everything, so the publisher reports and carries on.
A lock file (``flock``) keeps two processes from sharing one directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

from streamer.dirlock import lock_dir
from streamer.errors import ConfigError, StreamerError
from streamer.ratelog import RateLimitedLog
from streamer.sinks.outbox import Message, Outbox

log = logging.getLogger(__name__)

FILE = "outbox.sqlite3"
LOCK = "outbox.lock"
JOURNAL_S = 0.5  # journal tick: a pending message is on disk 0.5-1 s after it was queued

Row = tuple[int, Message]  # (outbox sequence number, message)


class SpoolError(StreamerError):
    """The spool's disk failed; ``str(e)`` says where and why, in one line."""


def spoolable(m: Message) -> bool:
    return m.qos >= 1 and not m.retain


class Spool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / FILE
        self._lock_fd: int | None = None

    def open(self) -> None:
        """Create the directory and take its lock; ConfigError when another process
        holds it or the directory cannot be written."""
        self._lock_fd = lock_dir(self.directory, LOCK, "mqtt.outbox_dir")
        try:
            with self._db() as db:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS outbox ("
                    " n INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL,"
                    " qos INTEGER NOT NULL)"
                )
        except SpoolError as e:
            self.close()
            raise ConfigError("mqtt.outbox_dir", str(e)) from None

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """A connection (one per call, so any thread may call); sqlite errors become one
        SpoolError line."""
        try:
            db = sqlite3.connect(self.path, isolation_level=None)  # explicit transactions
        except sqlite3.Error as e:
            raise SpoolError(f"{self.path}: {e}") from None
        try:
            db.execute("PRAGMA synchronous=FULL")
            yield db
        except sqlite3.Error as e:
            raise SpoolError(f"{self.path}: {e}") from None
        finally:
            db.close()

    def load(self) -> list[Message]:
        """The spooled messages, oldest first, renumbered 0..k-1 on disk: the sequence
        numbers of a fresh outbox they are put into. They stay until acknowledged.
        Called at start: a spool that cannot be read or rewritten is a ConfigError."""
        try:
            return self._load()
        except SpoolError as e:
            raise ConfigError("mqtt.outbox_dir", str(e)) from None

    def _load(self) -> list[Message]:
        with self._db() as db:
            rows = db.execute("SELECT topic, payload, qos FROM outbox ORDER BY n").fetchall()
            messages = [Message(str(t), bytes(p), int(q)) for t, p, q in rows]
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM outbox")
            db.executemany("INSERT INTO outbox VALUES (?, ?, ?, ?)", _values(enumerate(messages)))
            db.execute("COMMIT")
        return messages

    def sync(self, below: int, rows: Sequence[Row]) -> None:
        """Journal: delete the rows numbered below ``below`` (acknowledged or given up)
        and write ``rows``, in one transaction."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM outbox WHERE n < ?", (below,))
            db.executemany("INSERT OR REPLACE INTO outbox VALUES (?, ?, ?, ?)", _values(rows))
            db.execute("COMMIT")

    def save(self, rows: Sequence[Row]) -> int:
        """Replace the spool with the spoolable ``rows`` (atomically); how many."""
        keep = [(n, m) for n, m in rows if spoolable(m)]
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM outbox")
            db.executemany("INSERT INTO outbox VALUES (?, ?, ?, ?)", _values(keep))
            db.execute("COMMIT")
        return len(keep)


class Journal:
    """Keeps ``spool`` in step with ``outbox`` while the process runs (see the module
    docstring). ``run()`` is a task; ``stop()`` waits for a write in progress, so the
    shutdown's :meth:`Spool.save` comes last. Use on the event loop's thread: the outbox
    is read there, only the SQLite transaction runs in a worker thread."""

    def __init__(self, spool: Spool, outbox: Outbox, *, interval: float = JOURNAL_S) -> None:
        self.spool = spool
        self.outbox = outbox
        self.interval = interval
        self.writes = 0
        self.failures = 0
        self._mark = outbox.end_seq  # messages below it were queued before the last tick
        self._lo = 0  # rows on disk have numbers in [_lo, _hi)
        self._hi = outbox.end_seq  # load() wrote 0..k-1 for what the outbox starts with
        self._writing: asyncio.Future[None] | None = None
        self._errors = RateLimitedLog(log, interval=30.0)

    def on_disk(self, seq: int) -> bool:
        """Whether the pending message numbered ``seq`` has been journaled."""
        return seq < self._hi

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)  # the journal's period, not a synchronization
            await self.tick()

    async def tick(self) -> None:
        head, upto = self.outbox.head_seq, self._mark
        self._mark = self.outbox.end_seq
        rows = []
        for seq in range(max(self._hi, head), upto):  # pending for at least one tick
            m = self.outbox.get(seq)
            if m is not None and spoolable(m):
                rows.append((seq, m))
        stale = self._lo < min(head, self._hi)  # rows the broker acknowledged since
        if not rows and not stale:
            self._hi = max(self._hi, upto)
            return
        writing = self._writing = asyncio.get_running_loop().run_in_executor(
            None, self.spool.sync, head, rows
        )
        # its outcome is read even when this tick is cancelled mid-write (at shutdown):
        # then the write stays in ``_writing`` for stop() to wait for
        writing.add_done_callback(_read_outcome)
        try:
            await asyncio.shield(writing)
        except SpoolError as e:
            self.failures += 1
            self._errors.log(
                logging.ERROR, "sync", "mqtt outbox journal: %s; %d undelivered messages are "
                "only in memory until it can be written", e, len(self.outbox),
            )  # fmt: skip
            return
        finally:
            if writing.done():
                self._writing = None
        self.writes += 1
        self._lo, self._hi = head, max(self._hi, upto)

    async def stop(self) -> None:
        """Wait for a write in progress (its outcome no longer matters)."""
        writing = self._writing
        if writing is not None:
            with contextlib.suppress(Exception):
                await writing


def _read_outcome(f: asyncio.Future[None]) -> None:
    """Mark a journal write's failure as seen (tick() logs it; a cancelled tick cannot)."""
    if not f.cancelled():
        f.exception()


def _values(rows: Iterator[Row] | Sequence[Row]) -> list[tuple[int, str, bytes, int]]:
    return [(n, m.topic, m.payload, m.qos) for n, m in rows]
