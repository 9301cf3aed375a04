"""``streamer subscribe``: print predictions from a broker as they arrive."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlparse

import aiomqtt

from streamer.errors import BrokerError, ConfigError
from streamer.mqttconn import Client


def format_prediction(p: dict[str, Any]) -> str:
    mods = p.get("modalities", {})
    flags = "".join(
        m[0].upper() if mods.get(m, {}).get("present") else "-" for m in ("video", "audio", "text")
    )
    lat = p.get("latency_ms", {})
    return (
        f"{p.get('node')}/{p.get('stream')} seq={p.get('seq')} label={p.get('label')} "
        f"score={p.get('score', 0):.2f} [{flags}] "
        f"inference={lat.get('inference', 0):.1f}ms e2p={lat.get('end_to_publish', 0):.1f}ms"
        + (" partial" if p.get("partial") else "")
    )


async def subscribe(
    url: str, prefix: str, *, raw: bool, count: int | None, seconds: float | None
) -> int:
    u = urlparse(url)
    if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
        raise ConfigError("--url", f"expected mqtt://host:port, got {url!r}")
    port = u.port or (8883 if u.scheme == "mqtts" else 1883)
    seen = 0

    async def consume() -> None:
        nonlocal seen
        async with Client(u.hostname or "", port, tls_params=None) as client:
            await client.subscribe(f"{prefix}/+/+/prediction", qos=1)
            async for msg in client.messages:
                try:
                    payload = json.loads(bytes(msg.payload))
                except (ValueError, TypeError):
                    continue
                print(
                    json.dumps(payload) if raw else format_prediction(payload),
                    flush=True,
                )
                seen += 1
                if count is not None and seen >= count:
                    return

    try:
        async with asyncio.timeout(seconds):
            await consume()
    except TimeoutError:
        pass
    except aiomqtt.MqttError as e:
        raise BrokerError(f"{url}: {e}") from None
    return 0 if seen or count is None else 1
