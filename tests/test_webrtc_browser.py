"""A real browser publishes to ``streamer run`` with the page's own JavaScript.

Headless Chromium (the Debian package) with a fake camera and microphone fed from files
this test makes runs in a loopback-only network namespace, with Mosquitto and
``streamer run`` (see ``browser_scenario.py``, which reports what it saw as JSON).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import require_root, require_tool
from e2e_helpers import check_predictions

HERE = Path(__file__).resolve().parent


def _in_namespace(work: Path) -> subprocess.CompletedProcess[str]:
    script = HERE / "browser_scenario.py"
    inner = f'ip link set lo up && exec "{sys.executable}" "{script}" "{work}"'
    path = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.run(
        ["unshare", "-n", "bash", "-c", inner],
        capture_output=True, text=True, timeout=240, env=env, cwd=HERE.parent,
    )  # fmt: skip


def test_browser_publishes_camera_microphone_and_typed_text(
    tmp_path: Path, prediction_schema: dict[str, Any]
) -> None:
    require_tool("chromium")
    require_tool("mosquitto")
    require_tool("unshare")
    require_root("a loopback-only network namespace (unshare -n)")
    r = _in_namespace(tmp_path)
    assert r.returncode == 0, f"scenario failed:\n{r.stdout[-3000:]}\n{r.stderr[-4000:]}"
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert seen["steps"] == ["media", "text", "page"], seen["steps"]
    preds = seen["predictions"]
    check_predictions(preds, prediction_schema, hop=0.5, length=2.0)
    # the browser's camera and microphone reached the model
    assert any(p["modalities"]["video"]["present"] and p["modalities"]["audio"]["present"]
               for p in preds)  # fmt: skip
    full = [
        p for p in preds
        if p["modalities"]["video"]["frames"] == 8 and p["modalities"]["audio"]["seconds"] > 1.9
    ]  # fmt: skip
    assert full, "no window held every video slot and 2 s of audio"
    assert seen["status"]["video"] == "online" and seen["status"]["audio"] == "online"
    # the text typed into the page went over its data channel into the covering windows
    t = seen["sent_at"]
    covering = [p for p in preds if p["window"]["start"] < t < p["window"]["end"]]
    assert any(p["modalities"]["text"]["present"] for p in covering), covering
    # the page itself published and shows the stream's live predictions
    page = seen["page"]
    assert page["published"] is True and page["sent"] == 1
    assert page["predictions"] >= 2 and page["label"] in [str(d) for d in range(10)]
    assert seen["streamer_rc"] == 0, seen["streamer_log"]
