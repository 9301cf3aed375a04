"""Shared fixtures: a real Mosquitto on a free loopback port, and the CI rule.

In CI (``CI=true``) a missing real component is a failure, never a skip; elsewhere a
test that needs one is skipped and says why.
"""

from __future__ import annotations

import asyncio
import io
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Ray (tests/ray_helpers.py) reads its authentication mode once, at its first use in a
# process: the test clusters and the controllers they start use token auth, set here
# before anything imports ray
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))
REPO = Path(__file__).resolve().parent.parent


def require_tool(name: str) -> str:
    """The path of an executable; a skip outside CI, a failure in CI, if it is absent."""
    path = shutil.which(name)
    if path is None:
        if IN_CI:
            pytest.fail(f"{name} is not installed (CI must install it in .ci/run)")
        pytest.skip(f"{name} is not installed here (outside CI, so skipped)")
    return path


async def ended(task: asyncio.Task[T], seconds: float) -> T:
    """``task``'s result, once it ends within ``seconds``; else a failure that shows where
    every task of the loop waits. (``asyncio.wait_for`` would cancel the task and then
    wait for it without a bound: a node that does not stop met pytest's timeout, which
    shows the threads but no task.)"""
    done, _ = await asyncio.wait([task], timeout=seconds)
    if not done:
        stacks = io.StringIO()
        for t in asyncio.all_tasks():
            if t is not asyncio.current_task():
                t.print_stack(limit=12, file=stacks)
        pytest.fail(f"{task.get_name()} has not ended within {seconds} s; the tasks:\n"
                    f"{stacks.getvalue()}", pytrace=False)  # fmt: skip
    return task.result()


def require_root(why: str) -> None:
    """A namespace of our own (unshare -n / -m) needs root: a failure in CI, a skip
    elsewhere, as for a missing tool."""
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail(f"{why} needs root, and CI runs as root")
        pytest.skip(f"{why} needs root here (outside CI, so skipped)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)  # polling a port that is not up yet
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@dataclass
class Mosquitto:
    port: int
    conf: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no last save of its persistence file."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [shutil.which("mosquitto") or "mosquitto", "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)


def start_mosquitto(tmp: Path, extra: str = "", port: int | None = None) -> Mosquitto:
    require_tool("mosquitto")
    port = port or free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n{extra}")
    m = Mosquitto(port, conf, None)  # type: ignore[arg-type]
    m.start()
    return m


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    m = start_mosquitto(tmp_path)
    try:
        yield m
    finally:
        m.stop()


@pytest.fixture(scope="session")
def prediction_schema() -> dict[str, object]:
    """The schema the package ships (``streamer schema`` prints it), nothing beside the clone."""
    from streamer.contract import prediction_schema as shipped

    return shipped()


class PulseAudio:
    """A private PulseAudio daemon (no system one is running) with a null sink ``vsink``
    whose monitor is the default source: a microphone that hears what is played."""

    def __init__(self, run: Path) -> None:
        self.pulseaudio = require_tool("pulseaudio")
        require_tool("paplay")
        self.run = run
        run.mkdir(mode=0o700, exist_ok=True)
        self.script = run / "pa.pa"
        self.script.write_text(
            "load-module module-native-protocol-unix auth-anonymous=1\n"
            "load-module module-null-sink sink_name=vsink rate=48000 channels=1\n"
            "set-default-sink vsink\n"
            "set-default-source vsink.monitor\n"
        )
        self.socket = run / "pulse" / "native"
        self.env = {**os.environ, "PULSE_SERVER": f"unix:{self.socket}"}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "XDG_RUNTIME_DIR": str(self.run), "HOME": str(self.run)}
        env.pop("PULSE_SERVER", None)
        log = self.run / "pulseaudio.log"
        with log.open("ab") as log_file:
            self.proc = subprocess.Popen(
                [self.pulseaudio, "-n", "-F", str(self.script), "--daemonize=no",
                 "--exit-idle-time=-1"],
                env=env, stdout=subprocess.DEVNULL, stderr=log_file,
            )  # fmt: skip
        deadline = time.monotonic() + 10
        while not self.socket.exists():  # waiting for the daemon's socket, with a deadline
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                pytest.fail(f"pulseaudio did not start: {log.read_text(errors='replace')[-500:]}")
            time.sleep(0.02)

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill() if kill else self.proc.terminate()
            self.proc.wait(timeout=10)
        self.socket.unlink(missing_ok=True)
