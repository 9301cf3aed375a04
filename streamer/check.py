"""``streamer check``: validate the config, load the model, open every source once.

What no retry would cure (an unsupported URL option, a missing package, a file that
permission denies) is refused first, as ``run`` does, naming the field (exit 2).
"""

from __future__ import annotations

import asyncio

from streamer.clock import NODE_CLOCK
from streamer.config import load_config, secret_warnings
from streamer.errors import SourceEnded, SourceError
from streamer.sources.webrtc import WebRTCHub


async def check(path: str, overrides: list[str], *, per_source_s: float) -> int:
    cfg = load_config(path, overrides)  # before the heavy imports: config errors come fast
    for line in secret_warnings(cfg):
        print(f"warning: {line}")
    from streamer.sources.factory import open_sources, preflight

    preflight(cfg)  # before the model: refusing a URL needs no torch
    from streamer.inference.model import load_model

    loaded = load_model(cfg.model, cfg.window)
    print(f"config ok: node {cfg.node}, {len(cfg.streams)} stream(s), broker {cfg.mqtt.url}")
    print(
        f"model ok: {loaded.id.name} {loaded.id.version[:19]} on {loaded.device}"
        + ("" if loaded.trained else " (untrained)")
    )
    failed = 0
    hub = WebRTCHub() if cfg.http is not None else None
    for i, s in enumerate(cfg.streams):
        for src in open_sources(s, spec=loaded.spec, clock=NODE_CLOCK, webrtc=hub):
            what = "+".join(sorted(src.modalities))
            if src.url == "webrtc":  # nothing to open: a browser publishes to it later
                print(f"streams[{i}] {s.id} {what}: ok (webrtc, waits for a WHIP publisher)")
                continue
            try:
                await asyncio.wait_for(src.open(), per_source_s)
                item = await asyncio.wait_for(src.recv(), per_source_s)
                print(
                    f"streams[{i}] {s.id} {what}: ok ({src.url}, first item {type(item).__name__})"
                )
            except (SourceError, SourceEnded, TimeoutError) as e:
                failed += 1
                problem = str(e) or f"no data within {per_source_s} s"
                print(f"streams[{i}] {s.id} {what}: FAILED: {problem}")
            finally:
                await src.close()
    return 2 if failed else 0
