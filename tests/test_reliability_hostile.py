"""Hostile input: 10,000 fuzzed text events on a running node, and fuzzed configs.

Each fuzzed payload is built to be exactly one kind of wrong (or right), so the node's
rejection counters can be checked to the unit; valid events are mixed in and must land.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import yaml
from conftest import Mosquitto
from e2e_helpers import Traffic, run_node
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamer.config import WindowConfig, parse_config
from streamer.errors import ConfigError
from streamer.sources.text import MAX_BYTES

N = 10_000
NODE = "fuzz"


def fuzz(n: int, seed: int = 7) -> list[tuple[bytes, str]]:
    """``n`` payloads, each with the kind it must be counted as (``ok`` = accepted)."""
    rng = np.random.default_rng(seed)
    now = time.time()

    def rand(k: int) -> bytes:
        return rng.integers(0, 256, size=k, dtype=np.uint8).tobytes()

    makers: list[tuple[str, Any]] = [
        ("oversized", lambda: rand(int(rng.integers(MAX_BYTES + 1, 5 * MAX_BYTES)))),
        ("not_utf8", lambda: b"\xff" + rand(int(rng.integers(0, 2000)))),
        ("not_utf8", lambda: b"valid start \xc3\x28 then broken"),
        ("malformed_json", lambda: b"{" + b'"a":[' * 600 + b"1"),  # unterminated
        ("malformed_json", lambda: b'{"text":"x","n":' + b"[" * 1900 + b"]" * 1900 + b"}"),
        ("malformed_json", lambda: b'{"text": "no end"'),
        ("malformed_json", lambda: b"{ not json at all"),
        ("bad_field", lambda: json.dumps({"text": int(rng.integers(1 << 40))}).encode()),
        ("bad_field", lambda: b'{"text": null}'),
        ("bad_field", lambda: b'{"text": ["a", "list"]}'),
        ("bad_field", lambda: b'{"ts": 1}'),
        ("bad_field", lambda: b'{"text": "x", "ts": NaN}'),
        ("bad_field", lambda: b'{"text": "x", "ts": Infinity}'),
        ("bad_field", lambda: b'{"text": "x", "ts": "soon"}'),
        ("bad_field", lambda: b'{"text": "x", "ts": true}'),
        ("bad_field", lambda: b'{"text": "x", "ts": -5}'),
        ("bad_field", lambda: json.dumps({"text": "x", "ts": now + 1e6}).encode()),
        ("empty", lambda: b""),
        ("empty", lambda: b"  \n\t "),
        ("empty", lambda: b'{"text": "   "}'),
        ("ok", lambda: f"valid event {rng.integers(1000)}, it is a seven".encode()),
        ("ok", lambda: json.dumps({"text": "a three", "extra": {"deep": [1, 2]}}).encode()),
    ]
    out = []
    for i in range(n):
        kind, make = makers[i % len(makers)]
        out.append((make(), kind))
    order = rng.permutation(n)
    return [out[i] for i in order]


async def test_ten_thousand_hostile_text_events(tmp_path: Path, mosquitto: Mosquitto) -> None:
    payloads = fuzz(N)
    want = Counter(kind for _, kind in payloads)
    cfg = {
        "node": NODE,
        "mqtt": {"url": mosquitto.url, "stats_interval": 0.5},
        "streams": [{"id": "cam", "video": "synthetic:pattern?fps=10&size=160x120"}],
    }
    async with run_node(tmp_path, cfg, mosquitto.port) as node:
        traffic = node.traffic
        await traffic.until(
            lambda t: t.retained_last.get(f"streamer/{NODE}/cam/status/text") == "online", 60
        )
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as sender:
            window = asyncio.Semaphore(10)  # a sliding window of QoS 1 publishes

            async def send(payload: bytes) -> None:
                async with window:
                    await sender.publish(f"streamer/{NODE}/cam/text", payload, qos=1)

            async with asyncio.TaskGroup() as tg:
                for payload, _ in payloads:
                    tg.create_task(send(payload))

        def counted(t: Traffic) -> bool:
            if not t.stats:
                return False
            cam = t.stats[-1]["streams"]["cam"]
            return bool(cam["rejected"] + cam["frames_in"].get("text", 0) >= N)

        await traffic.until(counted, 60)
        all_in = time.time()  # every valid event is stamped and in the aligner by now
        cam = traffic.stats[-1]["streams"]["cam"]
        expected = {k: v for k, v in want.items() if k != "ok"}
        assert cam["rejected_by"] == expected
        assert cam["frames_in"]["text"] == want["ok"]
        # every valid event is in a published window, or counted late: an event stamped
        # on arrival is in exactly length/hop windows, so the windows' text counts add up
        # to that many times the events that landed (the node stamps an event when it
        # reads it, which a flood on a busy machine delays: which window an event lands in
        # is not the sender's to know, but that it lands or is counted is)
        await traffic.until(
            lambda t: any(p["window"]["start"] > all_in for p in t.predictions["cam"]), 30
        )
        preds = {p["seq"]: p for p in traffic.predictions["cam"]}  # (a redelivery is one)
        assert len({p["run"] for p in preds.values()}) == 1
        assert sorted(preds) == list(range(min(preds), max(preds) + 1)), "a window was lost"
        cam = traffic.stats[-1]["streams"]["cam"]
        assert cam["dropped_by"].get("aligner", 0) == 0, cam["dropped_by"]  # no text dropped
        landed = want["ok"] - cam["late_by"].get("text", 0)
        assert landed >= want["ok"] // 2, cam["late_by"]
        per_event = round(WindowConfig().length / WindowConfig().hop)  # the defaults: 4
        events = sum(p["modalities"]["text"]["events"] for p in preds.values())
        assert events == per_event * landed, (events, landed)
        assert node.proc.returncode is None, "the node died"
    assert node.rc == 0, node.log.read_text()[-3000:]
    assert "Traceback" not in node.log.read_text()


GOOD = {"streams": [{"id": "s1", "video": "synthetic:pattern"}]}
scalars = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=30)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
KEYS = ["node", "mqtt", "mqtt.url", "mqtt.qos", "mqtt.prefix", "mqtt.keepalive", "window",
        "window.length", "window.hop", "window.max_delay", "model", "model.device",
        "model.max_batch", "http", "http.listen", "http.ice_servers", "streams",
        "streams.0", "streams.0.id", "streams.0.video", "streams.0.audio", "streams.0.text",
        "streams.0.loop", "shutdown_timeout", "log_level", "surprise"]  # fmt: skip


def _set(cfg: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``dotted`` in ``cfg`` where the path exists (or can be made in a mapping)."""
    node: Any = cfg
    parts = dotted.split(".")
    for i, p in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not p.isdigit() or int(p) >= len(node):
                return  # an edit earlier replaced the list: nothing to set
            if last:
                node[int(p)] = value
                return
            node = node[int(p)]
        elif isinstance(node, dict):
            if last:
                node[p] = value
                return
            node = node.setdefault(p, {})
        else:
            return


@settings(
    max_examples=300, deadline=None, derandomize=True,  # the same 300 cases on every run
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip
@given(edits=st.lists(st.tuples(st.sampled_from(KEYS), values), min_size=1, max_size=3))
def test_fuzzed_configs_parse_or_fail_with_one_line(edits: list[tuple[str, Any]]) -> None:
    cfg = yaml.safe_load(yaml.safe_dump(GOOD))
    for key, value in edits:
        _set(cfg, key, value)
    try:
        parse_config(cfg)
    except ConfigError as e:
        line = str(e)
        assert line and "\n" not in line and "Traceback" not in line
        assert ": " in line  # "field: problem"
