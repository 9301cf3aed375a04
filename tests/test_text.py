"""parse_text_event: plain text, JSON events, and every rejection kind."""

from __future__ import annotations

import pytest

from streamer.errors import RejectedInput
from streamer.frames import NS, TextEvent
from streamer.sources.text import REJECTION_KINDS, parse_text_event

NOW = 1_764_160_000 * NS


def parse(payload: bytes, **kw: int) -> TextEvent:
    return parse_text_event(payload, stream="cam1", now_ns=NOW, **kw)


def kind(payload: bytes, **kw: int) -> str:
    with pytest.raises(RejectedInput) as e:
        parse(payload, **kw)
    assert e.value.kind in REJECTION_KINDS
    assert "\n" not in str(e.value)
    return e.value.kind


def test_plain_text_is_stamped_with_now() -> None:
    assert parse("  seven ✓\n".encode()) == TextEvent("cam1", NOW, "seven ✓")


def test_json_with_ts() -> None:
    ev = parse(b'{"text": "the digit is 7", "ts": 1764159999.25}')
    assert ev == TextEvent("cam1", 1_764_159_999_250_000_000, "the digit is 7")
    assert parse(b'{"text": "x", "ts": 1764159990}').pts_ns == 1_764_159_990 * NS


def test_json_without_ts_is_stamped_with_now_and_extra_keys_are_ignored() -> None:
    assert parse(b' {"text": "hi", "lang": "en"}') == TextEvent("cam1", NOW, "hi")


def test_ts_up_to_60s_ahead_is_accepted() -> None:
    assert parse(b'{"text": "a", "ts": 1764160059.5}').pts_ns > NOW


@pytest.mark.parametrize(
    "payload",
    [
        b'{"text": "a", "ts": 1764160061}',  # more than 60 s in the future
        b'{"text": "a", "ts": 99999999999999}',
        b'{"text": "a", "ts": NaN}',  # Python's json accepts NaN
        b'{"text": "a", "ts": Infinity}',
        b'{"text": "a", "ts": -1}',
        b'{"text": "a", "ts": "1764160000"}',
        b'{"text": "a", "ts": true}',
        b'{"text": "a", "ts": [1]}',
        b'{"ts": 1764160000}',  # no text
        b'{"text": 7}',
        b'{"text": null}',
        b'{"text": ["a"]}',
    ],
)
def test_bad_fields(payload: bytes) -> None:
    assert kind(payload) == "bad_field"


@pytest.mark.parametrize(
    "payload",
    [
        b'{"text": "a"',
        b'{text: "a"}',
        b'{"text": "a"} trailing',
        b"{" + b'"a":[' * 2000 + b"]" * 2000 + b"}",  # nested far too deep for json
    ],
)
def test_malformed_json(payload: bytes) -> None:
    assert kind(payload, max_bytes=1 << 20) == "malformed_json"


def test_deeply_nested_json_within_the_size_limit() -> None:
    nested = b'{"text": "a", "x": ' + b"[" * 4000 + b"]" * 4000 + b"}"
    assert len(nested) > 4096
    assert kind(nested) == "oversized"
    nested = b'{"text": "a", "x": ' + b"[" * 2000 + b"]" * 2000 + b"}"
    assert len(nested) <= 4096
    assert kind(nested) == "malformed_json"  # RecursionError, not a crash


def test_valid_nesting_is_fine() -> None:
    assert parse(b'{"text": "a", "meta": {"b": [1, {"c": 2}]}}').text == "a"


def test_oversized() -> None:
    assert kind(b"x" * 5 * 1024) == "oversized"
    assert parse(b"x" * 4096).text == "x" * 4096  # exactly 4 KiB is allowed
    assert kind(b"x" * 4097) == "oversized"
    assert kind(b"x" * 11, max_bytes=10) == "oversized"


@pytest.mark.parametrize("payload", [b"\xff\xfe", b"abc\x80", "é".encode("latin-1")])
def test_not_utf8(payload: bytes) -> None:
    assert kind(payload) == "not_utf8"


@pytest.mark.parametrize("payload", [b"", b"   \n\t", b'{"text": ""}', b'{"text": "  "}'])
def test_empty(payload: bytes) -> None:
    assert kind(payload) == "empty"


def test_only_a_leading_brace_marks_json() -> None:
    assert parse(b"[1, 2]").text == "[1, 2]"  # only "{" marks JSON


@pytest.mark.parametrize(
    "payload",
    [b'{"text": "\\ud800 seven"}', b'{"text": "seven \\udfff"}', b'{"text": "\\udc80\\ud800"}'],
)
def test_an_escaped_lone_surrogate_is_rejected_at_the_edge(payload: bytes) -> None:
    """Valid JSON whose text no UTF-8 can carry: rejected here, not by the tokenizer."""
    assert kind(payload) == "not_utf8"


def test_an_escaped_surrogate_pair_is_a_real_character() -> None:
    assert parse(b'{"text": "\\ud83d\\ude00 seven"}').text == "\U0001f600 seven"
