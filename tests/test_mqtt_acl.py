"""configs/mosquitto.conf + configs/mosquitto-acl.conf on a real Mosquitto: the node
(user ``streamer``) publishes and reads its text, a text sender (user ``text``) reaches
it, and neither an anonymous client nor the text sender can overwrite the node's
retained ``available``, ``label`` or discovery config.

Mosquitto acknowledges a denied QoS 1 publish and drops it, so each overwrite is
checked by reading the retained value back after the acknowledgement.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import subprocess
from pathlib import Path
from typing import Any

import aiomqtt
from conftest import REPO, Mosquitto, free_port, require_tool
from e2e_helpers import run_node
from test_mqtt_discovery import SYNTH, T, node_config, retained_now

CONF, ACL = REPO / "configs" / "mosquitto.conf", REPO / "configs" / "mosquitto-acl.conf"
USERS = {"streamer": "node-secret", "homeassistant": "ha-secret", "text": "text-secret"}
NODE, BASE = "acl", "streamer/acl"


def shipped_broker(tmp: Path) -> Mosquitto:
    """configs/mosquitto.conf as shipped, with this test's port, files and directories."""
    require_tool("mosquitto")
    passwd = tmp / "passwd"
    for user, password in USERS.items():
        subprocess.run(
            [require_tool("mosquitto_passwd"), *(["-c"] if user == "streamer" else []), "-b",
             str(passwd), user, password],
            check=True, capture_output=True,
        )  # fmt: skip
    port = free_port()
    swap = {
        "listener": f"listener {port} 127.0.0.1",
        "password_file": f"password_file {passwd}",
        "acl_file": f"acl_file {ACL}",
        "persistence_location": f"persistence_location {tmp}/",
    }
    lines = [swap.get(line.split(" ", 1)[0], line) for line in CONF.read_text().splitlines()]
    assert all(any(x.startswith(k + " ") for x in lines) for k in swap)  # all were there
    conf = tmp / "mosquitto.conf"
    # as root, Mosquitto would switch to user "mosquitto", who cannot read tmp_path
    conf.write_text("\n".join([*lines, f"user {getpass.getuser()}", ""]))
    m = Mosquitto(port, conf, None)  # type: ignore[arg-type]
    m.start()
    return m


async def read_back(port: int, filters: list[str]) -> dict[str, bytes]:
    """The retained values, read by Home Assistant's user (who may write the marker)."""
    return await retained_now(
        port, filters, marker="homeassistant/test-marker", username="homeassistant",
        password=USERS["homeassistant"],
    )  # fmt: skip


def as_user(port: int, user: str | None) -> aiomqtt.Client:
    if user is None:
        return aiomqtt.Client("127.0.0.1", port)
    return aiomqtt.Client("127.0.0.1", port, username=user, password=USERS[user])


async def test_only_the_node_writes_its_retained_state_and_text_senders_reach_it(
    tmp_path: Path,
) -> None:
    broker = shipped_broker(tmp_path)
    try:
        await _scenario(tmp_path, broker)
    finally:
        broker.stop()


async def _scenario(tmp_path: Path, broker: Mosquitto) -> None:
    secret = tmp_path / "node-password"
    secret.write_text(USERS["streamer"] + "\n")
    secret.chmod(0o600)
    cfg: dict[str, Any] = node_config(broker.url, NODE, {"cam": SYNTH})
    cfg["mqtt"].update(username="streamer", password_file=str(secret))
    cfg["events"] = {}  # its binary sensors and snapshot image go through the ACL too
    (run_dir := tmp_path / "run").mkdir()
    discovery = f"homeassistant/sensor/{NODE}/cam_label/config"
    state = [f"{BASE}/available", f"{BASE}/cam/available", f"{BASE}/cam/label"]
    async with run_node(run_dir, cfg, broker.port) as run:  # its collector is anonymous
        traffic = run.traffic
        await traffic.until(
            lambda t: (
                bool(t.predictions["cam"])
                and t.available[-1:] == ["online"]
                and t.retained_last.get(f"{BASE}/cam/available") == "online"
                and bool(t.retained_last.get(discovery))
            ),
            T,
        )
        before = await read_back(broker.port, [*state, discovery])
        assert before[f"{BASE}/available"] == b"online" and len(before) == 4

        for user in (None, "text"):  # anonymous, then the text sender
            async with as_user(broker.port, user) as intruder:
                for topic in [*state, discovery]:
                    await intruder.publish(topic, b"offline", qos=1, retain=True)
                await intruder.publish(discovery, b"", qos=1, retain=True)
        after = await read_back(broker.port, [*state, discovery])
        label = f"{BASE}/cam/label"  # the node's own label may change in between
        assert {**after, label: b""} == {**before, label: b""}
        assert after[label] != b"offline"

        # a text sender's event lands in a window: send one per prediction until it shows
        seen = 0
        async with as_user(broker.port, "text") as sender, asyncio.timeout(T):
            while not any(p["modalities"]["text"]["present"] for p in traffic.predictions["cam"]):
                if len(traffic.predictions["cam"]) > seen:
                    seen = len(traffic.predictions["cam"])
                    await sender.publish(f"{BASE}/cam/text", b"seven", qos=1)
                traffic.changed.clear()
                await traffic.changed.wait()

        # the node's other discovery configs went through its ACL lines
        more = [f"homeassistant/binary_sensor/{NODE}/cam_event_7/config",
                f"homeassistant/image/{NODE}/cam_snapshot/config",
                f"homeassistant/switch/{NODE}/cam_enabled/config"]  # fmt: skip
        assert set(await read_back(broker.port, more)) == set(more)
        # set/enabled: a text sender may not pause the stream; Home Assistant's switch may
        enabled = f"{BASE}/cam/enabled"
        async with as_user(broker.port, "text") as intruder:
            await intruder.publish(f"{BASE}/cam/set/enabled", b"OFF", qos=1)
        async with as_user(broker.port, "homeassistant") as ha:  # an invalid one marks when
            await ha.publish(f"{BASE}/cam/set/enabled", b"MARK", qos=1)  # the OFF was past
        await traffic.until(lambda t: "is neither ON nor OFF" in run.log.read_text(), T)
        assert "paused (set/enabled OFF)" not in run.log.read_text()
        async with as_user(broker.port, "homeassistant") as ha:
            await ha.publish(f"{BASE}/cam/set/enabled", b"OFF", qos=1)
            await ha.publish(f"{BASE}/cam/set/enabled", b"ON", qos=1)
        resumed = "resumed (set/enabled ON)"
        await traffic.until(
            lambda t: t.retained_last.get(enabled) == "ON" and resumed in run.log.read_text(), T
        )
    assert run.rc == 0, run.log.read_text()
    log = run.log.read_text()
    assert log.count("paused (set/enabled OFF)") == 1, log  # Home Assistant's
    end = await read_back(broker.port, [f"{BASE}/available"])
    assert end == {f"{BASE}/available": b"stopped"}  # its clean exit, through the ACL
    assert json.loads(before[discovery])["state_topic"] == f"{BASE}/cam/label"
