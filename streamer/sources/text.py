"""Text events: one MQTT payload -> one :class:`TextEvent`, or a counted rejection.

A payload is either plain UTF-8 text (stamped with the arrival time) or a JSON object
``{"text": str, "ts": epoch_seconds}`` (``ts`` optional; stamped with ``ts``). Anything
else raises :class:`RejectedInput` with one of these kinds:

    oversized        more than ``max_bytes`` bytes
    not_utf8         not valid UTF-8, or JSON whose text has an escaped lone surrogate
                     ("\\ud800"), which no UTF-8 can carry
    malformed_json   starts with "{" but is not a valid JSON object
    bad_field        "text" missing or not a string; "ts" not a finite number, negative,
                     or more than MAX_FUTURE_S seconds ahead of the node clock
    empty            no text (after trimming whitespace)

Pure: no I/O, the time comes in as ``now_ns``.
"""

from __future__ import annotations

import json
import math

from streamer.errors import RejectedInput
from streamer.frames import NS, TextEvent

MAX_BYTES = 4096
MAX_FUTURE_S = 60

REJECTION_KINDS = ("oversized", "not_utf8", "malformed_json", "bad_field", "empty")


def parse_text_event(
    payload: bytes, *, stream: str, now_ns: int, max_bytes: int = MAX_BYTES
) -> TextEvent:
    if len(payload) > max_bytes:
        raise RejectedInput("oversized", f"{len(payload)} bytes > {max_bytes}")
    try:
        raw = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RejectedInput("not_utf8", f"invalid UTF-8 at byte {e.start}") from None
    if raw.lstrip().startswith("{"):
        text, pts_ns = _parse_json(raw, now_ns)
    else:
        text, pts_ns = raw, now_ns
    text = text.strip()
    _check_encodable(text)
    if not text:
        raise RejectedInput("empty", "no text")
    return TextEvent(stream=stream, pts_ns=pts_ns, text=text)


def _parse_json(raw: str, now_ns: int) -> tuple[str, int]:
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise RejectedInput("malformed_json", _short(e)) from None
    if not isinstance(obj, dict):
        raise RejectedInput("malformed_json", f"expected an object, got {type(obj).__name__}")
    text = obj.get("text")
    if not isinstance(text, str):
        what = "missing" if text is None else f"a {type(text).__name__}, not a string"
        raise RejectedInput("bad_field", f"text is {what}")
    ts = obj.get("ts")
    if ts is None:
        return text, now_ns
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        raise RejectedInput("bad_field", f"ts is a {type(ts).__name__}, not a number")
    if isinstance(ts, float) and not math.isfinite(ts):
        raise RejectedInput("bad_field", f"ts is {ts}, not a finite number")
    if ts < 0:
        raise RejectedInput("bad_field", f"ts {ts} is negative")
    if ts > now_ns / NS + MAX_FUTURE_S:
        raise RejectedInput("bad_field", f"ts {ts} is more than {MAX_FUTURE_S}s in the future")
    if isinstance(ts, int):
        return text, ts * NS
    whole = math.floor(ts)  # split so that ts * 1e9 is not rounded to a multiple of 256
    return text, whole * NS + round((ts - whole) * NS)


def _check_encodable(text: str) -> None:
    """Decoded UTF-8 always encodes again; JSON's ``\\uXXXX`` escapes can name a lone
    surrogate, which the byte-level tokenizer (and every UTF-8 consumer) cannot take."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise RejectedInput(
            "not_utf8", f"text has a lone surrogate U+{ord(text[e.start]):04X} at {e.start}"
        ) from None


def _short(e: BaseException) -> str:
    if isinstance(e, RecursionError):
        return "nested too deeply"
    return str(e).splitlines()[0][:120]
