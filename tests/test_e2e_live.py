"""End to end on live inputs: a UDP MPEG-TS stream into ``streamer run`` until SIGTERM;
``streamer demo`` on its embedded broker; ``streamer check`` on a good config."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiomqtt
import jsonschema
from conftest import REPO, Mosquitto, free_port, start_mosquitto
from e2e_helpers import Traffic, check_predictions, collect, start_streamer, write_config
from media import make_clip, start_sender

HOP, LENGTH = 0.5, 2.0


async def test_udp_stream_runs_until_sigterm_then_drains(
    tmp_path: Path, mosquitto: Mosquitto, prediction_schema: dict[str, Any]
) -> None:
    port = free_port()
    url = f"udp://127.0.0.1:{port}"
    cfg = write_config(
        tmp_path / "udp.yaml",
        {
            "node": "live",
            "mqtt": {"url": mosquitto.url},
            "window": {"length": LENGTH, "hop": HOP, "max_delay": 0.5},
            "model": {"device": "cpu"},
            "streams": [{"id": "net", "video": url, "audio": url, "text": []}],
        },
    )
    traffic = Traffic()
    log = tmp_path / "run.log"
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="live-sub") as sub:
        watcher = asyncio.create_task(collect(sub, "streamer", "live", traffic))
        proc = await start_streamer(log, "run", str(cfg))
        sender = start_sender(port, seconds=60)
        try:
            await traffic.until(lambda t: len(t.predictions["net"]) >= 8, 60)  # live windows
            assert traffic.retained_last.get("streamer/live/net/status/video") == "online"
            proc.send_signal(signal.SIGTERM)
            rc = await asyncio.wait_for(proc.wait(), 30)
            await asyncio.wait_for(traffic.stopped.wait(), 10)
        finally:
            sender.terminate()
            sender.wait(timeout=10)
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            watcher.cancel()
    assert rc == 0, log.read_text()
    preds = traffic.predictions["net"]
    check_predictions(preds, prediction_schema, hop=HOP, length=LENGTH)
    steady = preds[4:-4]  # past the first partial windows, before the shutdown flush
    assert steady and all(
        p["modalities"]["video"]["present"] and p["modalities"]["audio"]["present"] for p in steady
    )
    assert all(p["modalities"]["video"]["frames"] >= 6 for p in steady)
    assert traffic.available[-1] == "stopped"
    assert traffic.retained_last["streamer/live/net/status/video"] == "offline"


def test_demo_prints_predictions_and_ends(tmp_path: Path) -> None:
    """Not a TTY: plain lines; the embedded broker on a free port; ends after --duration.

    The demo's text events follow its generator's plan by wall-clock segment, which leaves
    some segments without text. Sampling start times: with 2 streams for 5 s, 1-10 % of runs
    would see no event in a printed window (the range is startup's); with 3 streams for 8 s,
    under 0.3 %.
    """
    p = subprocess.run(
        [sys.executable, "-m", "streamer", "demo", "--duration", "8", "--streams", "3",
         "--port", str(free_port())],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert any(line.startswith("  streamer subscribe --url mqtt://127.0.0.1:") for line in lines)
    preds = [line for line in lines if line.startswith("demo/demo")]
    for sid in ("demo0", "demo1"):
        mine = [line for line in preds if line.startswith(f"demo/{sid} ")]
        assert len(mine) >= 4, p.stdout
        assert "[VA" in mine[len(mine) // 2]  # video and audio present mid-run
    assert any("[VAT]" in line for line in preds)  # the scripted text arrived over MQTT
    # the stop cuts the windows still open: marked partial, measured from the stop
    latencies = [float(m[1]) for line in preds if (m := re.search(r"e2p=(-?[\d.]+)ms", line))]
    assert len(latencies) == len(preds) and min(latencies) >= 0, preds
    assert any(" partial" in line for line in preds), preds
    summary = lines[-1]
    assert summary.startswith("demo done: ") and "received by the viewer" in summary


def test_check_opens_sources(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "ok.yaml",
        {
            "node": "chk",
            "model": {"device": "cpu"},
            "streams": [{"id": "s1", "video": "synthetic:pattern", "audio": "synthetic:tone"}],
        },
    )
    p = subprocess.run(
        [sys.executable, "-m", "streamer", "check", str(cfg)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    assert "config ok" in p.stdout and "model ok" in p.stdout
    assert p.stdout.count(": ok (") == 2
    bad = write_config(
        tmp_path / "bad.yaml",
        {"streams": [{"id": "s1", "video": f"udp://127.0.0.1:{free_port()}", "text": []}]},
    )
    p = subprocess.run(
        [sys.executable, "-m", "streamer", "check", str(bad), "--timeout", "2"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 2
    assert "FAILED" in p.stdout


async def test_subscribe_prints_predictions(
    tmp_path: Path, prediction_schema: dict[str, Any]
) -> None:
    """``streamer subscribe`` against a real broker: a node's predictions come out as
    lines (or raw JSON with --json) and --count ends it."""
    mosquitto = start_mosquitto(tmp_path, extra="sys_interval 1\n")
    try:
        await _subscribe_prints_predictions(tmp_path, mosquitto, prediction_schema)
    finally:
        mosquitto.stop()


async def _subscribe_prints_predictions(
    tmp_path: Path, mosquitto: Mosquitto, prediction_schema: dict[str, Any]
) -> None:
    clip = make_clip(tmp_path / "clip.mp4", 3.0, audio=True)
    cfg = write_config(
        tmp_path / "cfg.yaml",
        {
            "node": "sub",
            "mqtt": {"url": mosquitto.url},
            "model": {"device": "cpu"},
            "streams": [
                {"id": "s1", "video": f"file://{clip}", "audio": f"file://{clip}", "text": []}
            ],  # fmt: skip
        },
    )
    subscriber = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streamer", "subscribe", "--url", mosquitto.url, "--json",
        "--count", "3", "--timeout", "60",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    # The subscriber has subscribed once the broker counts its subscription; wait for
    # that through the broker's own $SYS topic rather than for a while.
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as probe:
        await probe.subscribe("$SYS/broker/subscriptions/count")
        async with asyncio.timeout(30):
            async for msg in probe.messages:
                if int(bytes(msg.payload)) >= 2:  # type: ignore[arg-type]
                    break
    run = await start_streamer(tmp_path / "run.log", "run", str(cfg))
    out, err = await asyncio.wait_for(subscriber.communicate(), 60)
    assert await asyncio.wait_for(run.wait(), 60) == 0
    assert subscriber.returncode == 0, err
    preds = [json.loads(line) for line in out.decode().splitlines()]
    assert [p["seq"] for p in preds] == [0, 1, 2]
    for p in preds:
        jsonschema.validate(p, prediction_schema)


# `streamer demo --streams 1 --duration 30` with the shipped checkpoint scored 90 % and
# 80 % live accuracy (30 windows inside one digit) in two runs on the dev machine; chance
# is 10 %. The bound leaves room for the few segments a 30 s run happens to see.
DEMO_BOUND = 0.50


def test_demo_live_accuracy_with_the_shipped_checkpoint() -> None:
    p = subprocess.run(
        [sys.executable, "-m", "streamer", "demo", "--duration", "30", "--streams", "1",
         "--port", str(free_port())],
        capture_output=True, text=True, timeout=180, cwd=REPO,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    line = next(x for x in p.stdout.splitlines() if x.startswith("live accuracy: "))
    accuracy, scored = float(line.split()[2]) / 100, int(line.split()[5])
    assert scored >= 20, line  # 30 s at a 0.5 s hop, a third of them inside one digit
    assert accuracy >= DEMO_BOUND, line
