"""Bound glibc's malloc arenas for a long-running node.

glibc gives each thread that allocates its own arena, up to 8 per core. The node's threads
(the inference executor, demuxers, the default executor) each fragment theirs, so RSS
creeps for minutes before it levels off: under the overload test (128 streams, 2 cores)
it rose from 522 to 543 MiB between 35 s and 155 s of one run; with ``MALLOC_ARENA_MAX=2``
it stayed within 494-509 MiB from 20 s to 150 s, and with this cap (2 on 2 cores) within
483-492 MiB from 30 s to 150 s. ``MALLOC_ARENA_MAX`` in the environment wins over this.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # from glibc's malloc.h


def limit_malloc_arenas(arenas: int | None = None) -> int | None:
    """Cap the arenas at ``arenas`` (default: the cores, at least 2) for threads started
    from now on; the cap set, or None where this is not glibc or the environment chose."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to bound
        return None
    n = arenas or max(2, os.cpu_count() or 2)
    if mallopt(M_ARENA_MAX, n) != 1:
        log.debug("mallopt(M_ARENA_MAX, %d) was refused", n)
        return None
    return n
