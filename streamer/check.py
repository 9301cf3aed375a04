"""``streamer check``: validate the config, load the model, open every source once.

What no retry would cure (an unsupported URL option, a missing package, a file that
permission denies) is refused first, as ``run`` does, naming the field (exit 2). Then the
sources are opened CONCURRENCY at a time, each for its first item, and reported in the
order of the config.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

from streamer.clock import NODE_CLOCK
from streamer.config import StreamConfig, load_config, secret_warnings
from streamer.errors import SourceEnded, SourceError
from streamer.sources.webrtc import WebRTCHub

if TYPE_CHECKING:
    from streamer.inference.model import LoadedModel

CONCURRENCY = 32  # sources opened at once: 32 unreachable cameras cost one timeout, not 32


async def check(path: str, overrides: list[str], *, per_source_s: float) -> int:
    cfg = load_config(path, overrides)  # before the heavy imports: config errors come fast
    for line in secret_warnings(cfg):
        print(f"warning: {line}")
    from streamer.sources.factory import preflight

    preflight(cfg)  # before the model: refusing a URL needs no torch
    from streamer.inference.model import load_model

    loaded = load_model(cfg.model, cfg.window)
    if cfg.events is not None:  # a listed label the model cannot give: exit 2
        from streamer.events.setup import check_labels

        check_labels(cfg.events, loaded.id.labels, loaded.id.readout, loaded.id.name)
    print(f"config ok: node {cfg.node}, {len(cfg.streams)} stream(s), broker {cfg.mqtt.url}")
    print(
        f"model ok: {loaded.id.name} {loaded.id.version[:19]} on {loaded.device}"
        + ("" if loaded.trained else " (untrained)")
    )
    hub = WebRTCHub() if cfg.http is not None else None
    failed = 0
    pending: deque[asyncio.Task[list[tuple[str, bool]]]] = deque()

    def report(lines: list[tuple[str, bool]]) -> None:
        nonlocal failed
        for line, ok in lines:
            print(line)
            failed += not ok

    try:
        for i, s in enumerate(cfg.streams):
            pending.append(asyncio.create_task(_check_stream(i, s, loaded, hub, per_source_s)))
            if len(pending) >= CONCURRENCY:
                report(await pending.popleft())
        while pending:
            report(await pending.popleft())
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return 2 if failed else 0


async def _check_stream(
    i: int, s: StreamConfig, loaded: LoadedModel, hub: WebRTCHub | None, per_source_s: float
) -> list[tuple[str, bool]]:
    """(line, ok) for each source of stream ``i``."""
    from streamer.sources.factory import open_sources

    out: list[tuple[str, bool]] = []
    try:
        sources = open_sources(s, spec=loaded.spec, clock=NODE_CLOCK, webrtc=hub)
    except SourceError as e:
        return [(f"streams[{i}] {s.id}: FAILED: {e}", False)]
    for src in sources:
        what = "+".join(sorted(src.modalities))
        if src.url == "webrtc":  # nothing to open: a browser publishes to it later
            out.append(
                (f"streams[{i}] {s.id} {what}: ok (webrtc, waits for a WHIP publisher)", True)
            )
            continue
        try:
            async with asyncio.timeout(per_source_s):
                await src.open()
            async with asyncio.timeout(per_source_s):
                item = await src.recv()
            line = f"streams[{i}] {s.id} {what}: ok ({src.url}, first item {type(item).__name__})"
            out.append((line, True))
        except (SourceError, SourceEnded, TimeoutError) as e:
            problem = str(e) or f"no data within {per_source_s} s"
            out.append((f"streams[{i}] {s.id} {what}: FAILED: {problem}", False))
        finally:
            await src.close()
    return out
