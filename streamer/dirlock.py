"""One process per directory: an ``flock`` on a lock file in it (the MQTT spool's
``mqtt.outbox_dir``, the event history's ``history.dir``). The lock goes with the file
descriptor, so a crashed process leaves none behind."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from streamer.errors import ConfigError


def lock_dir(directory: Path, name: str, field: str) -> int:
    """Create ``directory`` (and its parents), take ``directory/name``'s lock; its file
    descriptor (``os.close`` releases it). ConfigError naming ``field`` when the directory
    cannot be made or another process holds the lock."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / name, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        raise ConfigError(field, f"{directory}: {e.strerror or e}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ConfigError(field, f"{directory} is in use by another streamer process") from None
    return fd
