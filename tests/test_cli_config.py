"""Malformed configs and arguments: exit 2 with one line naming the field, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streamer.cli import main
from streamer.config import parse_config, secret_warnings

GOOD_STREAM = "streams: [{id: s1, video: 'synthetic:pattern'}]\n"

BAD_CONFIGS: list[tuple[str, str, str]] = [
    # (name, yaml, the field the one-line error must name)
    ("unsupported scheme", "streams: [{id: s1, video: 'ftp://x/y'}]", "streams[0].video"),
    ("no streams", "streams: []", "streams"),
    ("streams missing", "node: a", "streams"),
    ("bad stream id", "streams: [{id: 'a b', video: 'synthetic:pattern'}]", "streams[0].id"),
    (
        "duplicate id",
        "streams: [{id: a, video: 'synthetic:'}, {id: a, video: 'synthetic:'}]",
        "streams[1].id",
    ),
    ("unknown top key", "colour: red\n" + GOOD_STREAM, "colour"),
    ("unknown nested key", "mqtt: {hots: x}\n" + GOOD_STREAM, "mqtt.hots"),
    ("bad qos", "mqtt: {qos: 3}\n" + GOOD_STREAM, "mqtt.qos"),
    ("bad broker scheme", "mqtt: {url: 'http://x'}\n" + GOOD_STREAM, "mqtt.url"),
    ("hop not dividing", "window: {length: 2.0, hop: 0.3}\n" + GOOD_STREAM, "window"),
    ("negative delay", "window: {max_delay: -1}\n" + GOOD_STREAM, "window.max_delay"),
    ("bad device", "model: {device: tpu}\n" + GOOD_STREAM, "model.device"),
    ("fp16 on the cpu", "model: {device: cpu, precision: fp16}\n" + GOOD_STREAM, "model.precision"),
    ("bad precision", "model: {precision: int8}\n" + GOOD_STREAM, "model.precision"),
    ("zero threads", "model: {threads: 0}\n" + GOOD_STREAM, "model.threads"),
    ("threads not a number", "model: {threads: all}\n" + GOOD_STREAM, "model.threads"),
    (
        "cuda graphs on the cpu",
        "model: {device: cpu, cuda_graphs: true}\n" + GOOD_STREAM,
        "model.cuda_graphs",
    ),
    (
        "cuda graphs in onnx",
        "model: {runtime: onnx, cuda_graphs: true}\n" + GOOD_STREAM,
        "model.cuda_graphs",
    ),
    ("cuda graphs not a bool", "model: {cuda_graphs: maybe}\n" + GOOD_STREAM, "model.cuda_graphs"),
    ("missing file", "streams: [{id: s1, video: 'file:///no/such/clip.mp4'}]", "streams[0].video"),
    ("relative file", "streams: [{id: s1, video: 'file://clip.mp4'}]", "streams[0].video"),
    (
        "loop on a camera",
        "streams: [{id: s1, video: 'v4l2:///dev/video0', loop: true}]",
        "streams[0]",
    ),
    ("bad node", "node: 'my node'\n" + GOOD_STREAM, "node"),
    ("text wildcard", "streams: [{id: s1, text: ['a/#']}]", "streams[0].text"),
    ("not a mapping", "- just\n- a list\n", "config"),
    ("invalid yaml", "streams: [unclosed\n", "config"),
    ("mic as video", "streams: [{id: s1, video: 'mic:default'}]", "streams[0].video"),
    (
        "password file missing",
        "mqtt: {password_file: /no/such/pw}\n" + GOOD_STREAM,
        "mqtt.password_file",
    ),
    ("hop not a model step", "window: {length: 2.0, hop: 0.1}\n" + GOOD_STREAM, "window.hop"),
    ("webrtc without http", "streams: [{id: s1, video: webrtc}]", "streams[0].video"),
    ("a password in the config", "mqtt: {password: hunter2}\n" + GOOD_STREAM, "mqtt.password"),
    (
        "public listen without a token",
        "http: {listen: '0.0.0.0:8080'}\nstreams: [{id: s1, audio: webrtc}]",
        "http.token_file",
    ),
    ("listen without a port", "http: {listen: localhost}\n" + GOOD_STREAM, "http.listen"),
    (
        "token file missing",
        "http: {listen: '127.0.0.1:8080', token_file: /no/such/token}\n" + GOOD_STREAM,
        "http.token_file",
    ),
    (
        "ice server not stun or turn",
        "http: {listen: '127.0.0.1:8080', ice_servers: ['http://x']}\n" + GOOD_STREAM,
        "http.ice_servers[0]",
    ),
    (
        "host address not an IP",
        "http: {listen: '127.0.0.1:8080', host_addresses: [eth0]}\n" + GOOD_STREAM,
        "http.host_addresses[0]",
    ),
]


@pytest.mark.parametrize(("name", "text", "field"), BAD_CONFIGS, ids=[b[0] for b in BAD_CONFIGS])
def test_bad_config_exits_2_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str, field: str
) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    rc = main(["check", str(cfg)])
    out, err = capsys.readouterr()
    assert rc == 2, (name, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"streamer: error: {field}:"), lines[0]
    assert "Traceback" not in err


def test_bad_set_override(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(GOOD_STREAM)
    assert main(["check", str(cfg), "--set", "window.hop=0.3"]) == 2
    assert capsys.readouterr().err.strip() == (
        "streamer: error: window: length must be a whole multiple of hop"
    )
    assert main(["check", str(cfg), "--set", "nonsense"]) == 2
    assert capsys.readouterr().err.startswith("streamer: error: --set:")


def test_missing_config_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "/no/such/config.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("streamer: error: config: cannot read /no/such/config.yaml")


def test_subprocess_one_line_and_exit_code(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("streams: [{id: s1, video: 'ftp://host/x'}]\n")
    p = subprocess.run(
        [sys.executable, "-m", "streamer", "run", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2
    assert p.stderr.strip() == "streamer: error: streams[0].video: unsupported scheme 'ftp'"


def test_bad_argument_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["demo", "--streams", "0"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--streams" in err[0]


def test_secret_files_readable_by_others_are_warned_about(tmp_path: Path) -> None:
    pw, token = tmp_path / "pw", tmp_path / "token"
    pw.write_text("hunter2\n")
    token.write_text("t0ken\n")
    pw.chmod(0o644)
    token.chmod(0o600)
    cfg = parse_config(
        {
            "mqtt": {"username": "u", "password_file": str(pw)},
            "http": {"listen": "127.0.0.1:0", "token_file": str(token)},
            "streams": [{"id": "s1", "video": "synthetic:pattern"}],
        }
    )
    warnings = secret_warnings(cfg)
    assert len(warnings) == 1 and warnings[0].startswith("mqtt.password_file: ")
    assert "readable by other users (mode 644)" in warnings[0]
    pw.chmod(0o600)
    assert secret_warnings(cfg) == []
