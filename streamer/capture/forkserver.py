"""The fork server that capture processes start from.

``multiprocessing``'s ``forkserver`` context: a fresh interpreter, started once per node
process and never a fork of the node with its torch and threads, that imports numpy and
PyAV (:data:`PRELOAD`) once, with one OpenBLAS thread. Each capture process is a fork of
it and starts in milliseconds instead of paying about 0.3 s of CPU for those imports.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import multiprocessing
import os
import sys
import threading
from collections.abc import Iterator
from multiprocessing import forkserver
from multiprocessing.context import ForkServerContext

PRELOAD = ["streamer.capture.child", "streamer.sources.av"]  # what the fork server imports

_context_lock = threading.Lock()
_context: ForkServerContext | None = None
_warm = False  # the fork server has forked once: it has imported PRELOAD


def capture_context() -> ForkServerContext:
    """The ``forkserver`` context that capture processes start from, preloading
    :data:`PRELOAD` (set once per process)."""
    global _context
    with _context_lock:
        if _context is None:
            ctx = multiprocessing.get_context("forkserver")
            assert isinstance(ctx, ForkServerContext)
            ctx.set_forkserver_preload(PRELOAD)
            _context = ctx
        return _context


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """While the fork server may start: numpy's OpenBLAS in it (and so in every capture
    process) with one thread, which halves numpy's import and is all a decoder needs."""
    with _context_lock:
        before = os.environ.get("OPENBLAS_NUM_THREADS")
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
        try:
            yield
        finally:
            if before is None:
                del os.environ["OPENBLAS_NUM_THREADS"]
            else:
                os.environ["OPENBLAS_NUM_THREADS"] = before


def _answered() -> None:
    """The warm-up child's work: none (its start returned once the server answered)."""


def ensure_fork_server() -> None:
    """Start the fork server if it is not running, and, the first time, wait until it
    forks: a thread's work (~0.4 s). The server answers a start (with the child's pid)
    only once it has imported :data:`PRELOAD`, and a capture process starts on the event
    loop: the first one held the loop for that long (seconds on a busy machine), stalling
    every stream, MQTT client and an embedded broker. So a child that does nothing is
    started and joined here first, before any capture process exists (each ``open``
    comes here first, and the lock holds the others back), so no two threads ever poll
    one child."""
    global _warm
    ctx = capture_context()
    with _one_blas_thread():
        forkserver.ensure_running()
        if not _warm:
            warm_up = ctx.Process(target=_answered, name="streamer-capture-warm-up")
            with main_left_alone():
                warm_up.start()
            warm_up.join()
            _warm = True


@contextlib.contextmanager
def main_left_alone() -> Iterator[None]:
    """While a capture process starts: multiprocessing tells each child to re-run the
    parent's main module, unless it is imported by a name ending in ``.__main__`` (as
    ``python -m streamer`` is). Run as the ``streamer`` console script, that module is
    the script, and re-running it would import the CLI, torch included, in every capture
    process, which needs none of it: so the child is told the ``-m`` name instead."""
    main = sys.modules["__main__"]
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name.endswith(".__main__"):
        yield
        return
    main.__spec__ = importlib.machinery.ModuleSpec("streamer.__main__", None)
    try:
        yield
    finally:
        main.__spec__ = spec
