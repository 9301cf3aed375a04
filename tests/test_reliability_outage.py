"""Broker outages and restarts lose no prediction.

A real Mosquitto with persistence on is stopped for 10 s (SIGTERM, and SIGKILL) during a
``streamer run``; a subscriber with a persistent QoS 1 session, online throughout (it
reconnects as soon as the broker is back), must receive every ``seq`` of every stream.
With ``mqtt.outbox_dir``, a streamer restarted during an outage sends what it spooled.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Mosquitto, free_port, start_mosquitto
from e2e_helpers import start_streamer, write_config
from media import make_clip
from reliability_helpers import DurableSubscriber, published

from streamer.sinks.spool import FILE, Spool

OUTAGE_S = 10.0
NODE = "rel"


def _persistent(tmp: Path) -> str:
    # autosave every second, so the subscriber's session is on disk before a kill; as root
    # Mosquitto would switch to its own user, which cannot write into pytest's tmp dirs
    return f"persistence true\npersistence_location {tmp}/\nautosave_interval 1\nuser root\n"


def _config(url: str, **mqtt: Any) -> dict[str, Any]:
    return {
        "node": NODE,
        "mqtt": {"url": url, **mqtt},
        "shutdown_timeout": 30,
        "streams": [
            {"id": "a", "video": "synthetic:pattern?fps=10&size=160x120",
             "audio": "synthetic:tone?freq=330"},
            {"id": "b", "video": "synthetic:pattern?seed=1&fps=10&size=160x120"},
        ],  # fmt: skip
    }


async def _session_saved(broker_dir: Path) -> None:
    """Until Mosquitto has written its persistence file (after the subscription)."""
    db = broker_dir / "mosquitto.db"
    async with asyncio.timeout(10):
        while not db.exists():  # noqa: ASYNC110 - no event tells when a file appears
            await asyncio.sleep(0.1)  # polling a file Mosquitto writes on its autosave


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
async def test_a_broker_outage_loses_no_prediction(tmp_path: Path, how: str) -> None:
    broker_dir = tmp_path / "broker"
    broker_dir.mkdir()
    broker = start_mosquitto(broker_dir, extra=_persistent(broker_dir))
    sub = DurableSubscriber(broker.port, f"streamer/{NODE}/+/prediction")
    sub_task = asyncio.create_task(sub.run())
    log = tmp_path / "streamer.log"
    proc = None
    try:
        await asyncio.wait_for(sub.connected.wait(), 10)
        await _session_saved(broker_dir)
        cfg = write_config(tmp_path / "cfg.yaml", _config(broker.url))
        proc = await start_streamer(log, "run", str(cfg))
        await sub.until(lambda s: s.count("a") >= 4 and s.count("b") >= 4, 60)
        before = sub.received
        (broker.stop if how == "sigterm" else broker.kill)()
        outage_start = time.monotonic()
        await asyncio.sleep(OUTAGE_S)  # the outage itself (the scenario, not a synchronization)
        broker.start()
        # windows made during the outage arrive once the broker is back, then new ones
        await sub.until(lambda s: s.received >= before + 2 * OUTAGE_S * 2 + 8, 60)
        assert time.monotonic() - outage_start >= OUTAGE_S
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0, log.read_text()[-3000:]
        counts = published(log)
        assert set(counts) == {"a", "b"}, log.read_text()[-3000:]
        for stream, (run, n) in counts.items():
            assert n >= 2 * (OUTAGE_S + 4), (stream, n)  # 2 windows a second
            await sub.until(lambda s, r=run, st=stream, k=n: not s.missing(r, st, k), 30)
        assert sub.connects >= 2  # it really lost the broker and came back
    finally:
        sub_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sub_task
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        broker.stop()


async def test_a_restart_during_an_outage_sends_what_was_spooled(tmp_path: Path) -> None:
    port = free_port()  # no broker there yet: the whole first run is one outage
    spool_dir = tmp_path / "spool"
    clip = make_clip(tmp_path / "clip.mp4", 4.0, audio=True)
    cfg_data = _config(f"mqtt://127.0.0.1:{port}", outbox_dir=str(spool_dir))
    cfg_data["shutdown_timeout"] = 1
    cfg_data["streams"] = [{"id": "a", "video": f"file://{clip}", "audio": f"file://{clip}",
                            "realtime": False}]  # fmt: skip
    cfg = write_config(tmp_path / "cfg.yaml", cfg_data)
    # run 1: the file ends, the broker never answers: it waits shutdown_timeout, spools, exits
    log1 = tmp_path / "run1.log"
    proc = await start_streamer(log1, "run", str(cfg))
    assert await asyncio.wait_for(proc.wait(), 120) == 0, log1.read_text()[-3000:]
    run1, n1 = published(log1)["a"]
    assert n1 >= 6, log1.read_text()[-3000:]
    assert f"{n1} predictions not delivered yet: spooled to" in log1.read_text()
    assert (spool_dir / FILE).is_file()
    # the broker is back; run 2 sends run 1's predictions first, then its own
    broker_dir = tmp_path / "broker"
    broker_dir.mkdir()
    broker: Mosquitto = start_mosquitto(broker_dir, extra=_persistent(broker_dir), port=port)
    sub = DurableSubscriber(port, f"streamer/{NODE}/+/prediction")
    sub_task = asyncio.create_task(sub.run())
    try:
        await asyncio.wait_for(sub.connected.wait(), 10)
        log2 = tmp_path / "run2.log"
        proc = await start_streamer(log2, "run", str(cfg))
        assert await asyncio.wait_for(proc.wait(), 120) == 0, log2.read_text()[-3000:]
        run2, n2 = published(log2)["a"]
        assert run2 != run1
        await sub.until(lambda s: not s.missing(run1, "a", n1) and not s.missing(run2, "a", n2), 30)
        text2 = log2.read_text()
        assert f"{n1} spooled messages from" in text2 and "not delivered" not in text2
        spool = Spool(spool_dir)
        spool.open()
        assert spool.load() == []  # delivered, so nothing is left for a third run
        spool.close()
    finally:
        sub_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sub_task
        broker.stop()


async def test_shutdown_during_an_outage_without_a_spool_reports_the_loss(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", 3.0, audio=False)
    cfg_data = _config(f"mqtt://127.0.0.1:{free_port()}")
    cfg_data["shutdown_timeout"] = 2
    cfg_data["streams"] = [{"id": "a", "video": f"file://{clip}", "realtime": False}]
    cfg = write_config(tmp_path / "cfg.yaml", cfg_data)
    log = tmp_path / "run.log"
    proc = await start_streamer(log, "run", str(cfg))
    assert await asyncio.wait_for(proc.wait(), 120) == 0, log.read_text()[-3000:]
    _, n = published(log)["a"]
    text = log.read_text()
    assert n > 0 and f"{n} predictions were not delivered before shutdown" in text, text[-2000:]
