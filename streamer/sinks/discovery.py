"""Home Assistant MQTT discovery: one ``sensor`` per stream (the label), one
``binary_sensor`` per stream and event label (ON while its event is open) and, per stream
with snapshots, an ``image`` (the JPEG of the latest event's peak), grouped in one device
per node.

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
from streamer.sinks.topics import Topics, label_slug

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


def _available_and_device(topics: Topics, node: str, stream: str) -> dict[str, Any]:
    """What every entity of a stream shares: its availability and the node's device."""
    return {
        "availability": [
            _availability(topics.available),
            _availability(topics.stream_available(stream)),
        ],
        "availability_mode": "all",
        "device": {
            "identifiers": [f"streamer_{node}"],
            "name": f"streamer {node}",
            "manufacturer": "streamer",
            "sw_version": __version__,
        },
        "origin": {"name": "streamer", "sw_version": __version__},
    }


def ha_label_config(topics: Topics, node: str, stream: str) -> dict[str, Any]:
    return {
        "name": f"{stream} label",
        "unique_id": ha_unique_id(node, stream),
        "state_topic": topics.label(stream),
        "json_attributes_topic": topics.prediction(stream),
        **_available_and_device(topics, node, stream),
        "icon": "mdi:label-outline",
    }


def ha_event_config(topics: Topics, node: str, stream: str, label: str) -> dict[str, Any]:
    """The ``binary_sensor`` of one event label: ON while an event of it is open."""
    return {
        "name": f"{stream} {label}",
        "unique_id": f"streamer/{node}/{stream}/event/{label_slug(label)}",
        "state_topic": topics.event(stream, label),
        "payload_on": "ON",
        "payload_off": "OFF",
        **_available_and_device(topics, node, stream),
        "icon": "mdi:bell-ring-outline",
    }


def ha_image_config(topics: Topics, node: str, stream: str) -> dict[str, Any]:
    """The ``image`` of a stream: the JPEG of its latest event's peak (``P/N/S/snapshot``)."""
    return {
        "name": f"{stream} snapshot",
        "unique_id": f"streamer/{node}/{stream}/snapshot",
        "image_topic": topics.snapshot(stream),
        "content_type": "image/jpeg",
        **_available_and_device(topics, node, stream),
        "icon": "mdi:camera",
    }


def ha_switch_config(topics: Topics, node: str, stream: str) -> dict[str, Any]:
    """The ``switch`` of a stream: on while it runs, off while paused; Home Assistant
    turns it by ``P/N/S/set/enabled``, retained, so a pause holds across the node's
    restarts (its ACL user needs write on that topic)."""
    return {
        "name": f"{stream} enabled",
        "unique_id": f"streamer/{node}/{stream}/enabled",
        "command_topic": topics.set(stream, "enabled"),
        "state_topic": topics.enabled(stream),
        "payload_on": "ON",
        "payload_off": "OFF",
        "state_on": "ON",
        "state_off": "OFF",
        "retain": True,
        **_available_and_device(topics, node, stream),
        "icon": "mdi:play-pause",
    }
