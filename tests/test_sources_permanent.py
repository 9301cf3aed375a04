"""Permanent source errors (a missing package, an unsupported option, permission denied)
are said once: the stream worker opens the source once, logs one line, marks the
modality offline and does not retry, while the stream's other sources go on; ``streamer
check`` and ``run`` refuse them at start with exit 2 and one line naming the field."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from media import make_clip

from models.spec import ModelSpec
from streamer.app.stream import StreamPipeline
from streamer.clock import NODE_CLOCK
from streamer.config import StreamConfig, WindowConfig
from streamer.datasets.avdigits import speech
from streamer.errors import SourceOpenError, SourcePermanentError
from streamer.frames import Modality, Window
from streamer.sources.av import AVSource
from streamer.sources.avurls import v4l2_options
from streamer.sources.base import Source
from streamer.sources.mic import MicSource, resolve_device
from streamer.sources.synthetic import SyntheticSource
from streamer.stats import StreamStats

SPEC = ModelSpec()
# a write-only sysctl: reading it is EACCES even for root (CAP_DAC_OVERRIDE does not
# apply to /proc/sys), where a chmod 000 file denies nobody
DENIED = Path("/proc/sys/vm/drop_caches")
NO_SOUNDDEVICE = "raise ImportError('No module named sounddevice (hidden by the test)')\n"


class Runner:
    """Stands in for the inference runner: keeps the windows."""

    def __init__(self) -> None:
        self.windows: list[Window] = []
        self.got = asyncio.Event()
        self.forgotten: list[str] = []  # streams that ended

    def submit_nowait(self, window: Window) -> None:
        self.windows.append(window)
        self.got.set()

    async def submit(self, window: Window) -> None:
        self.submit_nowait(window)

    def forget(self, stream: str) -> None:
        self.forgotten.append(stream)


def counting_opens(src: Source) -> list[int]:
    """Wrap ``src.open`` to count its calls."""
    opens = [0]
    real = src.open

    async def open_counted() -> None:
        opens[0] += 1
        await real()

    src.open = open_counted  # type: ignore[method-assign]
    return opens


def worker(
    cfg: StreamConfig, sources: list[Source]
) -> tuple[StreamPipeline, Runner, list[tuple[Modality, bool]]]:
    statuses: list[tuple[Modality, bool]] = []

    def status(_stream: str, m: Modality, up: bool) -> None:
        statuses.append((m, up))

    runner = Runner()
    w = StreamPipeline(
        cfg, window=WindowConfig(length=0.5, hop=0.5, max_delay=0.2), spec=SPEC,
        clock=NODE_CLOCK, sources=sources, runner=runner,  # type: ignore[arg-type]
        stats=StreamStats(), status=status,
    )  # fmt: skip
    return w, runner, statuses


def errors_of(caplog: pytest.LogCaptureFixture, stream: str) -> list[str]:
    return [
        r.getMessage() for r in caplog.records
        if r.name == "streamer.app.stream" and r.getMessage().startswith(f"stream {stream}:")
    ]  # fmt: skip


def denied_file() -> Path:
    try:
        DENIED.open("rb").close()
    except PermissionError:
        return DENIED
    except OSError as e:
        pytest.skip(f"{DENIED} is not there to deny reading ({e.strerror})")
    pytest.skip(f"{DENIED} is readable here: nothing denies permission")


def hide_sounddevice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # import raises ImportError


# --- the worker: one open, one line, offline, no retry ------------------------------------


async def test_a_missing_sounddevice_is_said_once_and_not_retried(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    hide_sounddevice(monkeypatch)
    cfg = StreamConfig(id="m", audio="mic:default")
    src = MicSource("mic:default", spec=SPEC, stream="m")
    assert src.live  # a live source: a transient failure would be retried forever
    opens = counting_opens(src)
    w, _, statuses = worker(cfg, [src])
    with caplog.at_level(logging.INFO, logger="streamer"):
        await asyncio.wait_for(w.run(), 30)  # returns: nothing left to read, no retry loop
    assert opens[0] == 1
    lines = errors_of(caplog, "m")
    assert len(lines) == 1, lines
    assert "sounddevice is not installed" in lines[0] and "not retried" in lines[0]
    assert statuses and statuses[-1] == ("audio", False)
    assert ("audio", True) not in statuses


async def test_the_other_source_of_the_stream_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    hide_sounddevice(monkeypatch)
    cfg = StreamConfig(id="mv", video="synthetic:pattern?size=64x64", audio="mic:default")
    mic = MicSource("mic:default", spec=SPEC, stream="mv")
    video = SyntheticSource(cfg.video or "", video=True, audio=False, spec=SPEC, stream="mv")
    opens = counting_opens(mic)
    w, runner, statuses = worker(cfg, [video, mic])
    with caplog.at_level(logging.INFO, logger="streamer"):
        task = asyncio.create_task(w.run())
        try:
            # a reopen would come within 0.2 s (the first backoff); windows take 0.7 s each
            for _ in range(3):
                runner.got.clear()
                await asyncio.wait_for(runner.got.wait(), 30)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert any(win.video is not None for win in runner.windows)
    assert opens[0] == 1
    assert len(errors_of(caplog, "mv")) == 1
    assert ("video", True) in statuses and ("audio", True) not in statuses


async def test_a_file_that_permission_denies_is_opened_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"file://{denied_file()}"
    src = AVSource(url, video=True, audio=False, spec=SPEC, stream="f", realtime=True)
    assert src.live  # a paced file is retried like a camera when its open fails
    opens = counting_opens(src)
    w, _, statuses = worker(StreamConfig(id="f", video=url), [src])
    with caplog.at_level(logging.INFO, logger="streamer"):
        await asyncio.wait_for(w.run(), 30)
    assert opens[0] == 1
    lines = errors_of(caplog, "f")
    assert len(lines) == 1 and "ermission denied" in lines[0], lines
    assert statuses[-1] == ("video", False)


# --- the sources say which errors are permanent -------------------------------------------


async def test_permission_denied_is_permanent() -> None:
    src = AVSource(f"file://{denied_file()}", video=True, audio=False, spec=SPEC)
    with pytest.raises(SourcePermanentError, match="ermission denied"):
        await src.open()
    await src.close()


async def test_chmod_000_is_permanent(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads a chmod 000 file; the /proc/sys case covers root")
    clip = make_clip(tmp_path / "c.mp4", 1.0, audio=False)
    clip.chmod(0)
    src = AVSource(f"file://{clip}", video=True, audio=False, spec=SPEC)
    with pytest.raises(SourcePermanentError, match="ermission denied"):
        await src.open()
    await src.close()


async def test_a_file_url_takes_no_options(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "c.mp4", 1.0, audio=False)
    src = AVSource(f"file://{clip}?loop=1", video=True, audio=False, spec=SPEC)
    with pytest.raises(SourcePermanentError, match="file:// URLs take no options"):
        await src.open()
    await src.close()


async def test_a_missing_sounddevice_is_permanent(monkeypatch: pytest.MonkeyPatch) -> None:
    hide_sounddevice(monkeypatch)
    src = MicSource("mic:default", spec=SPEC)
    with pytest.raises(SourcePermanentError, match="sounddevice is not installed"):
        await src.open()
    await src.close()


def test_a_missing_espeak_ng_is_permanent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speech.shutil, "which", lambda name: None)
    with pytest.raises(SourcePermanentError, match="espeak-ng is not installed"):
        SyntheticSource("synthetic:avdigits", video=True, audio=True, spec=SPEC)


def test_an_unknown_camera_option_is_permanent() -> None:
    with pytest.raises(SourcePermanentError, match="unknown option 'colour'"):
        v4l2_options("v4l2:///dev/video0?colour=red")


@pytest.mark.parametrize(
    "call",
    [
        lambda: v4l2_options("v4l2:///dev/video0?size=" + "9" * 5000 + "x1"),
        lambda: resolve_device("mic:" + "9" * 5000, FakeSoundDevice()),
    ],
    ids=["v4l2 size", "mic index"],
)
def test_an_overlong_number_in_a_url_is_an_open_error(call: Callable[[], Any]) -> None:
    with pytest.raises(SourceOpenError):  # not ValueError (Python's int-str limit)
        call()


class FakeSoundDevice:
    @staticmethod
    def query_devices() -> list[dict[str, Any]]:
        return [{"name": "built-in", "max_input_channels": 1}]


# --- streamer check and run refuse them at start, naming the field ------------------------


def streamer(tmp_path: Path, command: str, text: str, *, hide_sd: bool = False) -> Any:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    env = dict(os.environ)
    if hide_sd:
        hidden = tmp_path / "hidden"
        hidden.mkdir(exist_ok=True)
        (hidden / "sounddevice.py").write_text(NO_SOUNDDEVICE)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(hidden), env.get("PYTHONPATH"), str(REPO)) if p
        )
    return subprocess.run(
        [sys.executable, "-m", "streamer", command, str(cfg)],
        capture_output=True, text=True, timeout=120, env=env, cwd=REPO,
    )  # fmt: skip


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize("case", ["missing sounddevice", "file option", "permission denied"])
def test_check_and_run_exit_2_naming_the_field(tmp_path: Path, command: str, case: str) -> None:
    hide_sd = False
    good = "{id: ok, video: 'synthetic:pattern'}"
    if case == "missing sounddevice":
        stream, field, problem = (
            "{id: m, audio: 'mic:default'}",
            "streams[1].audio",
            ("mic:default: sounddevice is not installed"),
        )
        hide_sd = True
    elif case == "file option":
        clip = make_clip(tmp_path / "c.mp4", 1.0, audio=False)
        stream, field, problem = (
            f"{{id: f, video: 'file://{clip}?loop=1'}}",
            "streams[1].video",
            ("file:// URLs take no options"),
        )
    else:
        url = f"file://{denied_file()}"
        stream, field, problem = (
            f"{{id: f, video: '{url}'}}",
            "streams[1].video",
            (f"{url}: permission denied"),
        )
    # mqtt: nothing listens there, so a run that got past the start would go on retrying
    text = f"mqtt: {{url: 'mqtt://127.0.0.1:9'}}\nstreams: [{good}, {stream}]\n"
    p = streamer(tmp_path, command, text, hide_sd=hide_sd)
    assert p.returncode == 2, (p.stdout[-2000:], p.stderr[-2000:])
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr[-3000:]
    assert lines[0].startswith(f"streamer: error: {field}: "), lines[0]
    assert problem in lines[0], lines[0]


def test_sounddevice_is_a_core_dependency() -> None:
    """``pip install .`` without extras must bring sounddevice: ``mic:`` is a core scheme."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = [d.split(">")[0].split("=")[0].split("[")[0].strip() for d in project["dependencies"]]
    assert "sounddevice" in names
    assert project["optional-dependencies"].get("mic", []) == []  # the old extra still resolves
