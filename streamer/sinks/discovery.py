"""Home Assistant MQTT discovery for a stream's label sensor.

Published retained to ``homeassistant/sensor/N_S/label/config`` (:meth:`Topics.ha_discovery`).
Home Assistant then shows one sensor per stream whose state is the top label, with the
latest prediction JSON as its attributes, unavailable unless the node says "online"
(the node also says "stopped" on a clean exit, which the template maps to offline).
"""

from __future__ import annotations

from typing import Any

from streamer.sinks.topics import Topics


def ha_label_config(topics: Topics, node: str, stream: str) -> dict[str, Any]:
    return {
        "name": f"{stream} label",
        "unique_id": f"streamer_{node}_{stream}_label",
        "state_topic": topics.label(stream),
        "json_attributes_topic": topics.prediction(stream),
        "availability_topic": topics.available,
        "availability_template": "{{ 'online' if value == 'online' else 'offline' }}",
        "payload_available": "online",
        "payload_not_available": "offline",
        "icon": "mdi:label-outline",
        "device": {
            "identifiers": [f"streamer_{node}"],
            "name": f"streamer {node}",
            "manufacturer": "streamer",
        },
    }
