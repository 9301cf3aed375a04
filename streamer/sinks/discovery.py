"""Home Assistant MQTT discovery: one ``sensor`` per stream (the label), grouped in one
device per node.

Published retained to ``D/sensor/N/S_label/config`` (:meth:`Topics.ha_discovery`) by the
process that owns the node's ``available`` (the node, or the ``--workers`` supervisor),
after :mod:`streamer.sinks.retained` has cleared what an earlier run left behind.

The entity is available when both the node's ``P/N/available`` and the stream's
``P/N/S/available`` say ``online`` (``availability_mode: all``): a stream that ended or
was removed from the config is unavailable while the node runs on.
"""

from __future__ import annotations

from typing import Any

from streamer import __version__
from streamer.sinks.topics import Topics

ONLINE_TEMPLATE = "{{ 'online' if value == 'online' else 'offline' }}"


def ha_unique_id(node: str, stream: str) -> str:
    # '/' cannot occur in an id: node "a_b" + stream "c" and node "a" + stream "b_c" differ
    return f"streamer/{node}/{stream}/label"


def _availability(topic: str) -> dict[str, str]:
    # "stopped" and "offline" (and anything else) both mean not available
    return {
        "topic": topic,
        "value_template": ONLINE_TEMPLATE,
        "payload_available": "online",
        "payload_not_available": "offline",
    }


def ha_label_config(topics: Topics, node: str, stream: str) -> dict[str, Any]:
    return {
        "name": f"{stream} label",
        "unique_id": ha_unique_id(node, stream),
        "state_topic": topics.label(stream),
        "json_attributes_topic": topics.prediction(stream),
        "availability": [
            _availability(topics.available),
            _availability(topics.stream_available(stream)),
        ],
        "availability_mode": "all",
        "icon": "mdi:label-outline",
        "device": {
            "identifiers": [f"streamer_{node}"],
            "name": f"streamer {node}",
            "manufacturer": "streamer",
            "sw_version": __version__,
        },
        "origin": {"name": "streamer", "sw_version": __version__},
    }
