"""The public contract that ships with the package: the prediction JSON schema.

``prediction.schema.json`` beside this file is the one source of truth (printed by
``streamer schema``). It is version 1 of the contract plus optional fields: a message
valid under version 1's schema keeps its meaning, and every field added since is optional.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

SCHEMA_FILE = "prediction.schema.json"
GAP_SCHEMA_FILE = "gap.schema.json"  # P/N/S/gap, --engine ray


def prediction_schema_text() -> str:
    """The schema's text, exactly as shipped."""
    return resources.files(__name__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


def prediction_schema() -> dict[str, Any]:
    """A fresh parsed copy of the schema."""
    schema: dict[str, Any] = json.loads(prediction_schema_text())
    return schema


def gap_schema() -> dict[str, Any]:
    """The gap marker's schema (``P/N/S/gap``, under ``--engine ray``)."""
    text = resources.files(__name__).joinpath(GAP_SCHEMA_FILE).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
