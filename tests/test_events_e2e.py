"""Events end to end: ``streamer run`` on a live AV-digits stream (its truth changes every
3 s) against a real Mosquitto gives ``new`` ... ``end`` on ``P/N/S/events`` (schema-valid),
``P/N/S/event/L`` ON then OFF (retained), the binary sensors' discovery under the
stream's device, and OFF again for every label after a stop.

Every wait is on a message, bounded by a timeout. The latency printed (``-s``) is from
the truth change (the segment boundary, epoch time) to the ``new`` message's arrival.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
from conftest import Mosquitto
from e2e_helpers import run_node
from test_mqtt_discovery import Recorder, recording, retained_now

from streamer.sources.synthetic import avdigits_label

SEED = 3
LABELS = [str(d) for d in range(10)]


def events(rec: Recorder, base: str) -> list[tuple[float, dict[str, Any]]]:
    """(arrival, message) of every message on ``base/events``."""
    return [
        (at, json.loads(p))
        for at, (tp, p) in zip(rec.arrived, rec.messages, strict=True)
        if tp == f"{base}/events"
    ]


def latencies(events: list[tuple[float, dict[str, Any]]]) -> list[tuple[float, float]]:
    """Per ``new`` whose label became true at a segment boundary (3 s, epoch time) before
    its start: (arrival - boundary, arrival - start). The stream's first label, true
    since before the stream began, has no boundary to measure from."""
    out = []
    for arrived, m in events:
        ev = m["event"]
        boundary = (ev["start"] - 1.0) // 3.0 * 3.0  # the segment 1 s before its start
        if m["type"] != "new" or avdigits_label(SEED, boundary + 1.5) != ev["label"]:
            continue
        if avdigits_label(SEED, boundary - 1.5) != ev["label"]:  # its truth did change
            out.append((round(arrived - boundary, 3), round(arrived - ev["start"], 3)))
    return out


def live_config(node: str, url: str, stats_interval: float = 60.0, **extra: Any) -> dict[str, Any]:
    """A node with one live AV-digits stream ``cam`` (seed ``SEED``) and events on."""
    stream = {"id": "cam", "video": f"synthetic:avdigits?seed={SEED}",
              "audio": f"synthetic:avdigits?seed={SEED}"}  # fmt: skip
    return {
        "node": node, "mqtt": {"url": url, "stats_interval": stats_interval},
        "model": {"device": "cpu"}, "streams": [stream],
        "events": {"on": 0.5, "off": 0.3, "min_windows": 2, "cooldown_s": 0.5}, **extra,
    }  # fmt: skip


def ended(base: str) -> Callable[[Recorder], bool]:
    """An event ended, and one opened after its truth changed."""
    return lambda r: (
        any(e["type"] == "end" for _, e in events(r, base)) and bool(latencies(events(r, base)))
    )


async def test_a_live_stream_gives_events_on_and_off_and_discovery(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    base = "streamer/ev/cam"
    schema = json.loads(
        resources.files("streamer.contract").joinpath("event.schema.json").read_text()
    )
    cfg = live_config("ev", mosquitto.url)
    async with recording(mosquitto.port, [f"{base}/#", "homeassistant/#"]) as rec:
        async with run_node(tmp_path, cfg, mosquitto.port) as run:
            await rec.until_true(ended(base))
        assert run.rc == 0, run.log.read_text()
        await rec.until_true(lambda r: r.payloads(f"{base}/available")[-1:] == [b"stopped"])
    got = events(rec, base)
    for _, m in got:
        jsonschema.validate(m, schema)
    end = next(m["event"] for _, m in got if m["type"] == "end")
    assert end["reason"] == "cooldown" and end["end"] >= end["start"]
    kinds = [m["type"] for _, m in got if m["event"]["id"] == end["id"]]
    assert kinds[0] == "new" and kinds[-1] == "end" and kinds.count("end") == 1
    label = end["label"]
    # ON when it opened, OFF when it ended: after the OFF every label had at the start
    states = rec.payloads(f"{base}/event/{label}")
    assert states[0] == b"OFF" and b"ON" in states and states[-1] == b"OFF"
    # a stop ends what was open ("stopped") and leaves every label OFF
    for _, m in got:
        if m["type"] == "end" and m["event"]["reason"] != "cooldown":
            assert m["event"]["reason"] == "stopped"
    left = await retained_now(mosquitto.port, [f"{base}/event/+"])
    assert left == {f"{base}/event/{x}": b"OFF" for x in LABELS}  # retained, each label
    # a binary sensor per label, grouped with the stream's label sensor under one device
    configs = {tp: json.loads(p) for tp, p in rec.messages if tp.startswith("homeassistant/") and p}
    label_sensor = configs["homeassistant/sensor/ev/cam_label/config"]
    for x in LABELS:
        c = configs[f"homeassistant/binary_sensor/ev/cam_event_{x}/config"]
        assert c["state_topic"] == f"{base}/event/{x}"
        assert c["unique_id"] == f"streamer/ev/cam/event/{x}"
        assert (c["payload_on"], c["payload_off"]) == ("ON", "OFF")
        assert c["device"] == label_sensor["device"]
        assert c["availability"] == label_sensor["availability"]
        assert c["availability"][0]["topic"] == "streamer/ev/available"
    lat = latencies(got)
    print(f"event latency (s): truth change -> new, the end of its first window -> new: {lat}")
    assert lat, got
    assert all(0.0 < a < 9.0 for a, _ in lat), lat  # within three segments
