"""A cancellation that lands with an MQTT ack is not lost, on a real Mosquitto.

aiomqtt 2.x waits for each ack with ``asyncio.wait_for``, which on Python 3.11 returns
normally when the task is cancelled in the loop iteration the ack arrives in
(python/cpython#86296). A node's control task was cancelled that way while it echoed a
stream's state; it went back to reading messages and the node never stopped (CI: the
``set/events`` test ran into pytest's 300 s timeout). Here the race is forced: the
cancel is sent from inside paho's ack callback, right after aiomqtt's own handler has
marked the call done.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import aiomqtt
import pytest
from conftest import Mosquitto

from streamer.config import MqttConfig
from streamer.mqttconn import make_client

T = 10.0

CALLS: dict[str, tuple[str, Callable[[aiomqtt.Client], Awaitable[Any]]]] = {
    "publish": ("on_publish", lambda c: c.publish("cancel/x", b"1", qos=1)),
    "subscribe": ("on_subscribe", lambda c: c.subscribe("cancel/#", qos=1)),
}


async def cancelled_at_its_ack(client: aiomqtt.Client, call: str) -> str:
    """Run ``call`` in a task, cancel that task in the callback that delivers its ack:
    "cancelled", or what came of it when the cancel was swallowed."""
    hook, run = CALLS[call]
    paho = client._client  # aiomqtt's paho client: where the ack comes in
    handler = getattr(paho, hook)
    task: asyncio.Task[Any] | None = None

    def ack_then_cancel(*args: Any, **kwargs: Any) -> None:
        handler(*args, **kwargs)  # aiomqtt marks the call acknowledged ...
        assert task is not None
        task.cancel()  # ... and the cancel comes in the same iteration

    setattr(paho, hook, ack_then_cancel)
    try:
        task = asyncio.create_task(run(client))
        done, _ = await asyncio.wait([task], timeout=T)
        assert done, f"{call} neither acknowledged nor cancelled within {T} s"
    finally:
        setattr(paho, hook, handler)
    return "cancelled" if task.cancelled() else f"returned {task.result()!r}"


@pytest.mark.parametrize("call", sorted(CALLS))
async def test_a_cancel_that_comes_with_the_ack_ends_the_task(
    mosquitto: Mosquitto, call: str
) -> None:
    cfg = MqttConfig(url=mosquitto.url)
    async with make_client(cfg, client_id=f"cancel-{call}") as client:
        for _ in range(3):  # the client stays usable after each
            assert await cancelled_at_its_ack(client, call) == "cancelled"
        await client.publish("cancel/after", b"ok", qos=1)


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12's wait_for lets the cancel through")
async def test_aiomqtts_own_client_loses_that_cancel_on_python_311(mosquitto: Mosquitto) -> None:
    """The premise: the same forced race swallows the cancel with aiomqtt's own client."""
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:
        assert await cancelled_at_its_ack(client, "publish") == "returned None"
