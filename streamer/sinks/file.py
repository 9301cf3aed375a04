"""The file sink: predictions as JSON lines (one contract object per line) in a rotating file.

Configured by ``sinks.file`` (:class:`~streamer.sinks.settings.FileSinkConfig`). Lines
are written in batches (what queued since the last write) by a thread, so a slow disk
never holds up the event loop; while it is slow the predictions wait in a bounded
buffer and past it the oldest are dropped, counted in the stats (``sinks.file.dropped``).

Rotation, like ``logrotate``'s numbering: a file never grows past ``max_bytes`` (unless
one line alone is larger); before a line would take it past, ``path`` becomes
``path.1``, ``path.1`` becomes ``path.2`` and so on, and ``path.{max_files - 1}`` is
deleted, so at most ``max_files`` files exist. ``fsync``: ``batch`` (the default) calls
fsync after every batch, so a power cut loses at most the batch being written; ``rotate``
only when a file is closed; ``never`` leaves it to the OS. A failed write (a full disk)
loses the lines not written (counted, logged once per interval); the file is opened
again for the next batch. An existing file is appended to.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import BinaryIO

from streamer.errors import ConfigError
from streamer.predictions import Prediction
from streamer.sinks.base import BufferedSink, SinkWriteError
from streamer.sinks.settings import FileSinkConfig, FsyncPolicy


class RotatingFile:
    """Appends lines to ``path``, rotating by size; not thread-safe (one writer thread)."""

    def __init__(self, path: Path, *, max_bytes: int, max_files: int, fsync: FsyncPolicy):
        self.path = path
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.fsync = fsync
        self.rotations = 0
        self._f: BinaryIO | None = None
        self._size = 0

    def open(self) -> None:
        self._f = open(self.path, "ab")  # noqa: SIM115 - held open across writes
        self._size = self._f.tell()

    def write(self, lines: list[bytes]) -> None:
        """Append every line, rotating where needed; raises SinkWriteError(lost) with the
        count of lines not written."""
        done = 0  # lines handed to the file
        safe = 0  # of them, those flushed to the OS
        try:
            if self._f is None:
                self.open()
            for line in lines:
                if self._size and self._size + len(line) > self.max_bytes:
                    self._rotate()  # flushes what came before
                    safe = done
                assert self._f is not None
                self._f.write(line)
                self._size += len(line)
                done += 1
            assert self._f is not None
            self._f.flush()
            safe = done
            if self.fsync == "batch":
                os.fsync(self._f.fileno())
        except OSError as e:
            self._abandon()
            raise SinkWriteError(len(lines) - safe, e) from e

    def _rotate(self) -> None:
        self._close(sync=self.fsync != "never")
        for i in range(self.max_files - 1, 0, -1):
            older = self._numbered(i)
            if i == self.max_files - 1:
                older.unlink(missing_ok=True)
            newer = self.path if i == 1 else self._numbered(i - 1)
            if newer.exists():
                newer.replace(older)
        if self.max_files == 1:
            self.path.unlink(missing_ok=True)
        self.rotations += 1
        self.open()

    def _numbered(self, i: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{i}")

    def _close(self, *, sync: bool) -> None:
        f, self._f = self._f, None
        if f is not None:
            try:
                f.flush()
                if sync:
                    os.fsync(f.fileno())
            finally:
                f.close()

    def _abandon(self) -> None:
        """After a failed write: drop the handle; the next batch opens the file again."""
        f, self._f = self._f, None
        if f is not None:
            try:
                f.close()
            except OSError:
                pass

    def close(self) -> None:
        self._close(sync=self.fsync != "never")


class FileSink(BufferedSink):
    name = "file"

    def __init__(self, cfg: FileSinkConfig) -> None:
        super().__init__(buffer=cfg.buffer)
        self.cfg = cfg
        self.file = RotatingFile(
            cfg.path, max_bytes=cfg.max_bytes, max_files=cfg.max_files, fsync=cfg.fsync
        )
        try:  # at start, so that a path it cannot write is a config error (exit 2)
            self.file.open()
        except OSError as e:
            raise ConfigError("sinks.file.path", f"cannot open {cfg.path}: {e.strerror}") from e
        self.written = 0

    async def write(self, batch: list[Prediction]) -> None:
        lines = [p.encode() + b"\n" for p in batch]
        await asyncio.to_thread(self.file.write, lines)
        self.written += len(lines)

    async def closed(self) -> None:
        await asyncio.to_thread(self.file.close)
