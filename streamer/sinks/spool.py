"""The outbox on disk (``mqtt.outbox_dir``): what a shutdown could not deliver, kept for
the next start (SQLite, one file, one node at a time).

At start the publisher loads the spooled messages into its outbox ahead of anything new;
the rows stay on disk until the next shutdown rewrites them with whatever is still
undelivered then, in one transaction. A crash in between therefore re-sends them
(duplicates, detectable by run, stream and seq) rather than losing them. Only
non-retained QoS >= 1 messages are spooled (predictions): retained state and stats
belong to the run that made them, and the next run publishes its own.

A lock file (``flock``) keeps two processes from sharing one directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from streamer.errors import ConfigError
from streamer.sinks.outbox import Message

FILE = "outbox.sqlite3"
LOCK = "outbox.lock"


def spoolable(m: Message) -> bool:
    return m.qos >= 1 and not m.retain


class Spool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / FILE
        self._lock_fd: int | None = None

    def open(self) -> None:
        """Create the directory and take its lock; ConfigError when another process holds it."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.directory / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise ConfigError("mqtt.outbox_dir", f"{self.directory}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ConfigError(
                "mqtt.outbox_dir", f"{self.directory} is in use by another streamer process"
            ) from None
        self._lock_fd = fd
        with contextlib.closing(self._db()) as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS outbox ("
                " n INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL,"
                " qos INTEGER NOT NULL)"
            )

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None)  # explicit transactions
        db.execute("PRAGMA synchronous=FULL")
        return db

    def load(self) -> list[Message]:
        """The spooled messages, oldest first (they stay on disk until :meth:`save`)."""
        with contextlib.closing(self._db()) as db:
            rows = db.execute("SELECT topic, payload, qos FROM outbox ORDER BY n").fetchall()
        return [Message(str(t), bytes(p), int(q)) for t, p, q in rows]

    def save(self, messages: Iterable[Message]) -> int:
        """Replace the spool with the spoolable ``messages`` (atomically); how many."""
        keep = [(m.topic, m.payload, m.qos) for m in messages if spoolable(m)]
        with contextlib.closing(self._db()) as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM outbox")
            db.executemany("INSERT INTO outbox (topic, payload, qos) VALUES (?, ?, ?)", keep)
            db.execute("COMMIT")
        return len(keep)
