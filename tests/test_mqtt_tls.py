"""The publisher and the text input over TLS with a password, against a real Mosquitto."""

from __future__ import annotations

import asyncio
import logging
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest
from conftest import Mosquitto, require_tool, start_mosquitto

from streamer.config import MqttConfig
from streamer.frames import TextEvent
from streamer.sinks.mqtt import MqttPublisher
from streamer.sinks.topics import Topics
from streamer.sources.mqtt_text import MqttTextInput
from streamer.testing import FakeClock

T = 10.0


@dataclass
class SecureBroker:
    mosquitto: Mosquitto
    ca: Path
    password_file: Path

    def cfg(self, password_file: Path | None = None) -> MqttConfig:
        return MqttConfig(
            url=f"mqtts://127.0.0.1:{self.mosquitto.port}",
            username="streamer",
            password_file=password_file or self.password_file,
            ca_file=self.ca,
        )


def _run(*args: str | Path) -> None:
    subprocess.run([str(a) for a in args], check=True, capture_output=True)


@pytest.fixture
def secure_broker(tmp_path: Path) -> Iterator[SecureBroker]:
    openssl = require_tool("openssl")
    passwd = require_tool("mosquitto_passwd")
    d = tmp_path / "tls"
    d.mkdir()
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _run(
        openssl,
        "req",
        "-x509",
        *ec,
        "-keyout",
        d / "ca.key",
        "-out",
        d / "ca.crt",
        "-days",
        "1",
        "-subj",
        "/CN=streamer test CA",
    )
    _run(
        openssl,
        "req",
        *ec,
        "-keyout",
        d / "server.key",
        "-out",
        d / "server.csr",
        "-subj",
        "/CN=localhost",
    )
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _run(
        openssl,
        "x509",
        "-req",
        "-in",
        d / "server.csr",
        "-CA",
        d / "ca.crt",
        "-CAkey",
        d / "ca.key",
        "-CAcreateserial",
        "-out",
        d / "server.crt",
        "-days",
        "1",
        "-extfile",
        d / "san.ext",
    )
    _run(passwd, "-c", "-b", d / "passwd", "streamer", "s3cret")
    for f in d.iterdir():
        f.chmod(0o644)  # mosquitto may drop to its own user before reading them
    (d / "secret").write_text("s3cret\n")
    (d / "wrong").write_text("nope\n")
    extra = (
        f"allow_anonymous false\npassword_file {d / 'passwd'}\nuser root\n"
        f"cafile {d / 'ca.crt'}\ncertfile {d / 'server.crt'}\nkeyfile {d / 'server.key'}\n"
    )
    m = start_mosquitto(d, extra)
    try:
        yield SecureBroker(m, d / "ca.crt", d / "secret")
    finally:
        m.stop()


async def test_publisher_and_text_input_over_tls_with_a_password(
    secure_broker: SecureBroker,
) -> None:
    cfg = secure_broker.cfg()
    topics = Topics("sec", "n1")
    text_in = MqttTextInput(
        cfg,
        {topics.prediction("s1"): "s1"},  # listen to what the publisher sends
        clock=FakeClock(),
        client_id="sec-text",
    )
    text = text_in.source("s1")
    async with text_in, MqttPublisher(cfg, topics, client_id="sec-pub") as pub:
        await asyncio.wait_for(text.open(), T)  # subscribed
        assert text.connected is True
        await asyncio.wait_for(pub.wait_connected(), T)
        pub.enqueue(topics.prediction("s1"), "over tls", 1)
        ev = await asyncio.wait_for(text.recv(), T)
        assert isinstance(ev, TextEvent)
        assert (ev.stream, ev.text) == ("s1", "over tls")


async def test_a_wrong_password_is_retried_and_logged_once(
    secure_broker: SecureBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="streamer.sinks.mqtt")
    cfg = secure_broker.cfg(password_file=secure_broker.ca.parent / "wrong")
    async with MqttPublisher(cfg, Topics("sec", "n1"), client_id="bad-pub") as pub:
        pub.enqueue("sec/n1/x", b"1", 1)
        assert await pub.close(0.3) == 1
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("unavailable" in line for line in lines) == 1
    refused = [line for line in lines if "unavailable" in line]
    assert "authori" in refused[0].lower() or "refused" in refused[0].lower()
    # a client with the right credentials is fine on the same broker
    async with aiomqtt.Client(
        "127.0.0.1",
        secure_broker.mosquitto.port,
        username="streamer",
        password="s3cret",
        tls_params=aiomqtt.TLSParameters(ca_certs=str(secure_broker.ca)),
    ) as c:
        await c.publish("sec/n1/ok", b"1", qos=1)
