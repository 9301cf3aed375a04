"""The prediction schema ships in the package (a clone has nothing beside it) and
``streamer schema`` prints it for subscribers."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema

from streamer.contract import prediction_schema, prediction_schema_text


def test_streamer_schema_prints_the_shipped_schema() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "streamer", "schema"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == prediction_schema_text()
    schema = json.loads(out.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$id"] == "streamer.prediction/1"


def test_version_1_fields_stay_required_and_additions_are_optional() -> None:
    schema = prediction_schema()
    v1 = ["schema", "node", "stream", "run", "seq", "window", "label", "score", "scores",
          "modalities", "latency_ms", "model"]  # fmt: skip
    assert schema["required"] == v1
    assert "partial" in schema["properties"] and "partial" not in schema["required"]
