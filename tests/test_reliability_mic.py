"""A microphone that vanishes (its sound server killed) is a SourceError within seconds,
not a hang; once it is back, reopening finds it again (PortAudio re-reads its devices)."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import IN_CI, REPO, PulseAudio

CHILD = r"""
import asyncio, sys, time
from models.spec import ModelSpec
from streamer.errors import SourceError
from streamer.sources.mic import MicSource

async def main():
    src = MicSource("mic:default", spec=ModelSpec())
    await src.open()
    await src.recv()
    print("READY", flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # the parent killed the sound server
    t0 = time.monotonic()
    try:
        while True:
            await src.recv()
    except SourceError as e:
        print(f"GONE {time.monotonic() - t0:.2f} {e}", flush=True)
    await src.close()
    await asyncio.to_thread(sys.stdin.readline)  # the parent started it again
    t0 = time.monotonic()
    for attempt in range(50):  # what the stream worker does, with its backoff simplified
        try:
            await src.open()
            await src.recv()
            print(f"BACK {time.monotonic() - t0:.2f} {attempt}", flush=True)
            break
        except SourceError as e:
            print(f"RETRY {e}", flush=True)
            await src.close()
            await asyncio.sleep(0.2)
    await src.close()

asyncio.run(main())
"""


def test_a_vanishing_microphone_is_reported_and_found_again(tmp_path: Path) -> None:
    pytest.importorskip("sounddevice")
    if ctypes.util.find_library("portaudio") is None:
        if IN_CI:
            pytest.fail("libportaudio2 is not installed (CI must install it in .ci/run)")
        pytest.skip("libportaudio2 is not installed here (outside CI, so skipped)")
    daemon = PulseAudio(tmp_path / "pulse-run")
    daemon.start()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], cwd=REPO, env=daemon.env, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    lines: list[str] = []
    try:
        lines.append(child.stdout.readline().strip())
        assert lines[-1] == "READY", lines
        daemon.stop(kill=True)  # the microphone's server dies without a word
        child.stdin.write("killed\n")
        child.stdin.flush()
        lines.append(child.stdout.readline().strip())
        daemon.start()
        child.stdin.write("back\n")
        child.stdin.flush()
        while not (line := child.stdout.readline().strip()).startswith("BACK") and line:
            lines.append(line)
        lines.append(line)
        assert child.wait(timeout=30) == 0
    finally:
        if child.poll() is None:
            child.kill()
        _, err = child.communicate(timeout=10)
        daemon.stop()
    gone = lines[1]
    assert gone.startswith("GONE "), (lines, err[-2000:])
    assert float(gone.split()[1]) < 6.0, gone  # queued audio drains, then the stall shows
    assert "mic:default: " in gone and "\n" not in gone
    assert lines[-1].startswith("BACK "), (lines, err[-2000:])


async def test_a_microphone_that_goes_quiet_is_an_error_not_a_hang() -> None:
    import asyncio

    from models.spec import ModelSpec
    from streamer.errors import SourceError
    from streamer.sources.handoff import Handoff
    from streamer.sources.mic import MicSource

    src = MicSource("mic:default", spec=ModelSpec(), stall_s=0.2)
    src._handoff = Handoff(4, loop=asyncio.get_running_loop())  # opened, then no callbacks
    with pytest.raises(SourceError, match=r"^mic:default: no audio for 0\.2 s"):
        await asyncio.wait_for(src.recv(), 5)
