"""Home Assistant discovery and the node's retained footprint, ``streamer run`` against a
real Mosquitto: removed streams are cleared, each stream has its own availability,
discovery goes out once, ids with ``_`` do not collide, the ``origin`` block, and a
configurable (or disabled) discovery prefix.

Every wait is on a message (or the end of a process), bounded by a timeout; "nothing
more came" is read after the node's last message (``stopped``), which follows everything
it published on its one connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from conftest import REPO, Mosquitto
from e2e_helpers import Traffic, run_node, write_config
from media import make_clip
from test_workers import _start

from streamer import __version__
from streamer.config import MqttConfig
from streamer.sinks.mqtt import MqttPublisher
from streamer.sinks.topics import Topics

T = 60.0  # bound for one node to start, publish and stop
SYNTH = {"video": "synthetic:pattern?seed=0&fps=4&size=64x48"}


def node_config(
    url: str, node: str, streams: dict[str, dict[str, Any]], **mqtt: Any
) -> dict[str, Any]:
    return {
        "node": node,
        "mqtt": {"url": url, "stats_interval": 60.0, **mqtt},
        "model": {"device": "cpu"},
        "streams": [{"id": sid, **src} for sid, src in streams.items()],
    }


async def retained_now(
    port: int, filters: list[str], *, marker: str = "test/marker", **auth: str
) -> dict[str, bytes]:
    """Every message retained on ``filters`` right now. A marker retained by us (under
    ``marker``, outside ``filters``) and subscribed after them comes after theirs:
    Mosquitto sends a subscription's retained messages before it reads our next packet."""
    mark = f"{marker}/{uuid.uuid4().hex}"
    got: dict[str, bytes] = {}
    async with aiomqtt.Client("127.0.0.1", port, **auth) as c:
        await c.publish(mark, b"m", qos=1, retain=True)
        await c.subscribe([(f, 1) for f in filters])
        await c.subscribe(mark, qos=1)
        async with asyncio.timeout(10):
            async for m in c.messages:
                if m.topic.value == mark:
                    break
                if m.retain and isinstance(m.payload, bytes):
                    got[m.topic.value] = m.payload
        await c.publish(mark, b"", qos=1, retain=True)
    return got


class Recorder:
    """Every message on ``filters``, in order, from before the node starts."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.arrived: list[float] = []  # the wall-clock time each message came
        self.changed = asyncio.Event()

    def count(self, topic: str) -> int:
        return sum(t == topic for t, _ in self.messages)

    async def until(self, topic: str, payload: bytes) -> None:
        await self.until_all([(topic, payload)])

    async def until_all(self, wanted: list[tuple[str, bytes]]) -> None:
        await self.until_true(lambda r: all(w in r.messages for w in wanted))

    async def until_true(self, predicate: Callable[[Recorder], bool]) -> None:
        async with asyncio.timeout(T):
            while not predicate(self):
                self.changed.clear()
                await self.changed.wait()

    def payloads(self, topic: str) -> list[bytes]:
        return [p for t, p in self.messages if t == topic]


@asynccontextmanager
async def recording(port: int, filters: list[str]) -> AsyncIterator[Recorder]:
    rec = Recorder()
    async with aiomqtt.Client("127.0.0.1", port) as c:
        await c.subscribe([(f, 1) for f in filters])

        async def read() -> None:
            async for m in c.messages:
                assert isinstance(m.payload, bytes)
                rec.messages.append((m.topic.value, m.payload))
                rec.arrived.append(time.time())
                rec.changed.set()

        task = asyncio.create_task(read())
        try:
            yield rec
        finally:
            task.cancel()


def discovery_configs(traffic: Traffic) -> dict[str, dict[str, Any]]:
    """Discovery topic -> config of the label sensors, from what a node's collector saw
    last on each (the enabled switches are checked on their own)."""
    return {
        t: json.loads(p)
        for t, p in traffic.retained_last.items()
        if t.startswith("homeassistant/sensor/") and p
    }


def by_state_topic(traffic: Traffic) -> dict[str, dict[str, Any]]:
    return {c["state_topic"]: c for c in discovery_configs(traffic).values()}


async def test_a_stream_removed_from_the_config_is_cleared_at_the_next_start(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    node, base = "rm", "streamer/rm"
    (first := tmp_path / "first").mkdir()
    cfg = node_config(mosquitto.url, node, {"keep": SYNTH, "gone": SYNTH})
    async with run_node(first, cfg, mosquitto.port) as run:
        await run.traffic.until(
            lambda t: (
                t.retained_last.get(f"{base}/gone/label")
                and t.retained_last.get(f"{base}/gone/status/video") == "online"
                and f"{base}/gone/label" in by_state_topic(t)
            ),
            T,
        )
    assert run.rc == 0, run.log.read_text()
    filters = [f"{base}/#", "homeassistant/#"]
    before = await retained_now(mosquitto.port, filters)
    gone_config = sorted(t for t, p in before.items() if t.startswith("homeassistant/")
                         and json.loads(p)["state_topic"].startswith(f"{base}/gone/"))  # fmt: skip
    gone = sorted(t for t in before if t.startswith(f"{base}/gone/"))  # what it left
    assert gone_config == [  # its label sensor and its enabled switch
        "homeassistant/sensor/rm/gone_label/config", "homeassistant/switch/rm/gone_enabled/config"
    ]  # fmt: skip
    assert {f"{base}/gone/label", f"{base}/gone/status/video"} <= set(gone), gone

    (second := tmp_path / "second").mkdir()
    cfg = node_config(mosquitto.url, node, {"keep": SYNTH})
    async with recording(mosquitto.port, filters) as rec:  # from before it starts
        async with run_node(second, cfg, mosquitto.port) as run:
            await rec.until_all([(t, b"") for t in [*gone, *gone_config]])
    assert run.rc == 0, run.log.read_text()
    after = await retained_now(mosquitto.port, filters)
    assert not [t for t in after if "/gone/" in t or t in gone_config], after
    assert after[f"{base}/keep/label"] and after[f"{base}/keep/available"] == b"stopped"
    assert any(json.loads(p)["state_topic"] == f"{base}/keep/label"
               for t, p in after.items() if t.startswith("homeassistant/"))  # fmt: skip
    log = run.log.read_text()
    assert log.count(f"cleared {len(gone) + len(gone_config)} retained topics") == 1, log


async def test_each_stream_has_its_own_availability(tmp_path: Path, mosquitto: Mosquitto) -> None:
    base = "streamer/av"
    clip = make_clip(tmp_path / "short.mp4", 1.0, audio=False, size=(64, 48))
    cfg = node_config(mosquitto.url, "av", {"short": {"video": f"file://{clip}"}, "long": SYNTH})
    async with run_node(tmp_path, cfg, mosquitto.port) as run:
        # the file ends, the node and the other stream run on
        await run.traffic.until(
            lambda t: (
                t.retained_last.get(f"{base}/short/available") == "stopped"
                and t.retained_last.get(f"{base}/long/available") == "online"
                and t.available == ["online"]
                and len(by_state_topic(t)) == 2
            ),
            T,
        )
        configs = by_state_topic(run.traffic)
    assert run.rc == 0, run.log.read_text()
    for stream in ("short", "long"):
        c = configs[f"{base}/{stream}/label"]
        assert c["availability_mode"] == "all"
        assert [a["topic"] for a in c["availability"]] == [
            f"{base}/available",
            f"{base}/{stream}/available",
        ]
    left = await retained_now(mosquitto.port, [f"{base}/+/available"])
    assert left == {f"{base}/short/available": b"stopped", f"{base}/long/available": b"stopped"}


async def test_discovery_goes_out_once_per_start(tmp_path: Path, mosquitto: Mosquitto) -> None:
    base = "streamer/once"
    async with recording(mosquitto.port, [f"{base}/#", "homeassistant/#"]) as rec:
        cfg = node_config(mosquitto.url, "once", {"cam": SYNTH})
        async with run_node(tmp_path, cfg, mosquitto.port) as run:
            await run.traffic.until(lambda t: bool(t.predictions["cam"]), T)
        assert run.rc == 0, run.log.read_text()
        await rec.until(f"{base}/available", b"stopped")  # the node's last message
    discovery = [t for t, _ in rec.messages if t.startswith("homeassistant/")]
    assert discovery == [  # once each: the label sensor, the enabled switch
        "homeassistant/sensor/once/cam_label/config", "homeassistant/switch/once/cam_enabled/config"
    ], discovery  # fmt: skip
    # and every retained state topic went once per value it took, not once more
    assert rec.count(f"{base}/cam/available") == 2  # online, stopped


async def test_ids_with_underscores_get_their_own_discovery_topic_and_unique_id(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    (a_dir := tmp_path / "a").mkdir()
    (ab_dir := tmp_path / "ab").mkdir()
    want = {"streamer/a_b/c/label", "streamer/a/b_c/label"}
    cfg_ab = node_config(mosquitto.url, "a_b", {"c": SYNTH})
    cfg_a = node_config(mosquitto.url, "a", {"b_c": SYNTH})
    async with run_node(ab_dir, cfg_ab, mosquitto.port) as ab:
        await ab.traffic.until(lambda t: "streamer/a_b/c/label" in by_state_topic(t), T)
        async with run_node(a_dir, cfg_a, mosquitto.port) as a:
            await a.traffic.until(lambda t: "streamer/a/b_c/label" in by_state_topic(t), T)
    assert (ab.rc, a.rc) == (0, 0), a.log.read_text() + ab.log.read_text()
    got = await retained_now(mosquitto.port, ["homeassistant/#"])
    configs = [json.loads(p) for t, p in got.items() if t.startswith("homeassistant/sensor/")]
    assert {c["state_topic"] for c in configs} == want, got  # neither overwrote the other
    assert len({c["unique_id"] for c in configs}) == 2
    switches = [json.loads(p) for t, p in got.items() if t.startswith("homeassistant/switch/")]
    assert {c["command_topic"] for c in switches} == {
        "streamer/a_b/c/set/enabled", "streamer/a/b_c/set/enabled"}  # fmt: skip
    assert len({c["unique_id"] for c in switches}) == 2


async def test_the_0_1_0_discovery_topic_of_a_stream_is_cleared_and_no_other_node_s(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    own = "homeassistant/sensor/up_cam/label/config"  # node up, stream cam, as 0.1.0 had it
    # node up_x, stream y: the same 0.1.0 topic as node up with a stream x_y would get
    other = "homeassistant/sensor/up_x_y/label/config"
    old = {"unique_id": "streamer_up_cam_label", "state_topic": "streamer/up/cam/label"}
    theirs = {"unique_id": "streamer_up_x_y_label", "state_topic": "streamer/up_x/y/label"}
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as c:
        await c.publish(own, json.dumps(old), qos=1, retain=True)
        await c.publish(other, json.dumps(theirs), qos=1, retain=True)
    cfg = node_config(mosquitto.url, "up", {"cam": SYNTH, "x_y": SYNTH})
    async with recording(mosquitto.port, ["homeassistant/#"]) as rec:
        async with run_node(tmp_path, cfg, mosquitto.port) as run:
            # the clearing goes before the discovery, which names x_y last
            await run.traffic.until(lambda t: "streamer/up/x_y/label" in by_state_topic(t), T)
            assert (own, b"") in rec.messages
    assert run.rc == 0, run.log.read_text()
    got = await retained_now(mosquitto.port, ["homeassistant/#"])
    assert own not in got
    assert json.loads(got[other]) == theirs
    sensors = {t: p for t, p in got.items() if t.startswith("homeassistant/sensor/")}
    assert {json.loads(p)["state_topic"] for t, p in sensors.items() if t != other} == {
        "streamer/up/cam/label",
        "streamer/up/x_y/label",
    }


async def test_discovery_carries_the_origin_block(tmp_path: Path, mosquitto: Mosquitto) -> None:
    cfg = node_config(mosquitto.url, "orig", {"cam": SYNTH})
    async with run_node(tmp_path, cfg, mosquitto.port) as run:
        await run.traffic.until(lambda t: bool(discovery_configs(t)), T)
    assert run.rc == 0, run.log.read_text()
    (config,) = discovery_configs(run.traffic).values()
    assert config["origin"] == {"name": "streamer", "sw_version": __version__}


async def test_the_discovery_prefix_is_configurable_and_null_turns_discovery_off(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    for node, prefix in (("dp1", "ha/site-1"), ("dp2", None)):
        (d := tmp_path / node).mkdir()
        async with recording(mosquitto.port, ["#"]) as rec:
            cfg = node_config(mosquitto.url, node, {"cam": SYNTH}, discovery_prefix=prefix)
            async with run_node(d, cfg, mosquitto.port) as run:
                await run.traffic.until(lambda t: bool(t.predictions["cam"]), T)
            assert run.rc == 0, run.log.read_text()
            await rec.until(f"streamer/{node}/available", b"stopped")
        topics = {t for t, _ in rec.messages if node in t and not t.startswith("streamer/")}
        want = {f"{prefix}/sensor/{node}/cam_label/config",
                f"{prefix}/switch/{node}/cam_enabled/config"}  # fmt: skip
        assert topics == (want if prefix else set())


def test_a_bad_discovery_prefix_exits_2_naming_the_field(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "cfg.yaml", node_config("mqtt://127.0.0.1:1", "bad", {"c": SYNTH})
    )
    for bad in ("ha/+", "ha/#", "/ha", "ha/", "a//b", "$SYS"):
        p = subprocess.run(
            [sys.executable, "-m", "streamer", "run", str(cfg), "--set",
             f"mqtt.discovery_prefix={bad}"],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2 and len(lines) == 1, (bad, p.stderr)
        assert "mqtt.discovery_prefix" in lines[0] and "not a topic prefix" in lines[0], lines


async def test_with_workers_a_dead_worker_s_streams_go_offline_and_discovery_goes_once(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    base = "streamer/mw"
    s0, s1 = f"{base}/s0/available", f"{base}/s1/available"
    cfg = write_config(
        tmp_path / "cfg.yaml", node_config(mosquitto.url, "mw", {"s0": SYNTH, "s1": SYNTH})
    )
    async with recording(mosquitto.port, [f"{base}/#", "homeassistant/#"]) as rec:
        run = await _start(cfg, 2)
        try:
            m = await run.line(r"worker 1/2 started \(pid (\d+)\)", T)
            await rec.until(s1, b"online")
            os.kill(int(m[1]), signal.SIGKILL)  # no Will of its own: the supervisor says it
            await rec.until_true(lambda r: r.payloads(s1) == [b"online", b"offline", b"online"])
            assert rec.payloads(s0) == [b"online"] and rec.payloads(f"{base}/available") == [
                b"online"
            ]
        finally:
            if run.proc.returncode is None:
                run.proc.send_signal(signal.SIGTERM)
        assert await run.wait(T) == 0, "\n".join(run.lines[-30:])
        await rec.until(f"{base}/available", b"stopped")
    assert rec.payloads(s0)[-1] == rec.payloads(s1)[-1] == b"stopped"
    discovery = sorted(t for t, _ in rec.messages if t.startswith("homeassistant/"))
    assert discovery == [  # by the supervisor, for every stream, once
        "homeassistant/sensor/mw/s0_label/config",
        "homeassistant/sensor/mw/s1_label/config",
        "homeassistant/switch/mw/s0_enabled/config",
        "homeassistant/switch/mw/s1_enabled/config",
    ]


async def test_a_retained_value_set_before_the_connection_goes_out_once(
    mosquitto: Mosquitto,
) -> None:
    topics = Topics("test", "pub1")
    async with recording(mosquitto.port, ["test/pub1/#"]) as rec:
        p = MqttPublisher(MqttConfig(url=mosquitto.url), topics, client_id="pub1")
        p.set_retained(topics.label("s1"), "3")  # before it has a connection
        async with p:
            await asyncio.wait_for(p.wait_connected(), T)
            assert await p.drain(T) == 0
        await rec.until(topics.available, b"stopped")
    assert rec.payloads(topics.label("s1")) == [b"3"]


async def test_clearing_is_capped_and_logged_in_one_line(
    mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from streamer.sinks import announce  # here: the other tests also run on 0.1.0's code

    topics = Topics("streamer", "cap")
    old = [topics.label(f"old{i}") for i in range(5)]  # five removed streams' labels
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as c:
        for t in [*old, topics.label("cam")]:
            await c.publish(t, b"7", qos=1, retain=True)
    monkeypatch.setattr(announce, "MAX_CLEAR", 3)
    caplog.set_level(logging.INFO, logger="streamer.sinks.announce")
    cfg = MqttConfig(url=mosquitto.url)
    async with MqttPublisher(cfg, topics, client_id="cap") as pub:
        async with announce.announced(cfg, topics, pub, ["cam"], client_id="cap-scan") as a:
            await asyncio.wait_for(a.done.wait(), T)
        assert a.cleared == 3 and await pub.drain(T) == 0
    left = await retained_now(mosquitto.port, [f"{topics.base}/+/label"])
    assert sorted(left) == sorted([*old[3:], topics.label("cam")])  # cam is configured
    lines = [r.getMessage() for r in caplog.records if "cleared" in r.getMessage()]
    assert len(lines) == 1 and "cleared 3 retained topics" in lines[0], lines
    assert "2 more at the next start" in lines[0]


async def test_a_node_stopped_while_it_reads_its_retained_topics_exits(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """The scan reads for up to SCAN_S while messages keep coming; a SIGTERM meanwhile
    still ends the node at once. (The hang once seen here, a cancellation that
    ``wait_for`` swallows when a message comes with it, is a race this does not force.)"""
    base = "streamer/busy"
    for attempt in range(2):
        (d := tmp_path / str(attempt)).mkdir()
        cfg = node_config(mosquitto.url, "busy", {"cam": SYNTH})
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as flood:
            async with run_node(d, cfg, mosquitto.port, stop_timeout=20) as run:
                await run.traffic.until(lambda t: t.available[-1:] == ["online"], T)
                for i in range(300):  # a label changing every few ms, through the SIGTERM
                    await flood.publish(f"{base}/other/label", str(i), qos=1)
                    if i == 50:
                        assert run.proc.returncode is None
                        run.proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(run.proc.wait(), 20)  # one SIGTERM is enough
        assert run.rc == 0, run.log.read_text()
