"""MQTT topic names (the contract table in DESIGN.md), built in one place.

``P`` = prefix, ``N`` = node, ``S`` = stream id, ``M`` = modality, ``D`` = the Home
Assistant discovery prefix (``mqtt.discovery_prefix``, default ``homeassistant``)::

    P/N/available             online | stopped | offline (Last Will)     1 / retained
    P/N/S/available           online | stopped | offline (stream)         1 / retained
    P/N/S/prediction          prediction JSON                             qos / no
    P/N/S/label               top label, only when it changes             1 / retained
    P/N/S/status/M            online | offline                            1 / retained
    P/N/S/events              event JSON: new | update | end              1 / no
    P/N/S/event/L             ON | OFF per event label (L: label_slug)    1 / retained
    P/N/S/snapshot            JPEG of the latest event's peak (binary)    1 / retained
    P/N/S/text                text input                                  subscribed
    P/N/S/set/enabled         ON | OFF: resume | pause the stream         subscribed
    P/N/S/enabled             ON | OFF, the echo                          1 / retained
    P/N/S/set/events          JSON thresholds of the stream               subscribed
    P/N/S/thresholds          JSON, the echo                              1 / retained
    P/N/set/model             a checkpoint's path or a preset's name      subscribed
    P/N/stats                 stats JSON                                  0 / no
    P/N/shards                where each shard runs (--engine ray)        1 / retained
    P/N/S/gap                 gap marker: windows not produced (ray)      1 / no
    D/sensor/N/S_label/config Home Assistant discovery                    1 / retained
    D/binary_sensor/N/S_event_L/config  discovery of an event label       1 / retained
    D/image/N/S_snapshot/config         discovery of the snapshot image   1 / retained
    D/switch/N/S_enabled/config         discovery of the enabled switch   1 / retained

Node and stream ids match ``[A-Za-z0-9_-]+``, the alphabet Home Assistant allows in a
discovery topic's ``node_id`` and ``object_id``: no character is left to separate two ids
inside one level, so the node has a level of its own (``N/S_label``, a fixed suffix after
one id is unambiguous). Up to 0.1.0 it was ``D/sensor/N_S/label/config``, which node
``a_b`` with stream ``c`` and node ``a`` with stream ``b_c`` shared (:meth:`ha_legacy`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

HA_DISCOVERY_PREFIX = "homeassistant"
_NOT_ID = re.compile(r"[^A-Za-z0-9_-]+")


def label_slug(label: str) -> str:
    """A label as one topic level and a Home Assistant object id: itself when it is made
    of ``[A-Za-z0-9_-]``, else those runs of other characters as ``_`` plus ``-`` and 8
    hex digits of its sha256 (``tabby cat`` -> ``tabby_cat-5d5c1a0e``), so that two
    labels never share one."""
    if _NOT_ID.search(label) is None and label:
        return label
    digest = hashlib.sha256(label.encode()).hexdigest()[:8]
    return f"{_NOT_ID.sub('_', label)[:64]}-{digest}"


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str
    node: str
    discovery_prefix: str | None = HA_DISCOVERY_PREFIX  # None: no Home Assistant discovery

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.node}"

    @property
    def available(self) -> str:
        return f"{self.base}/available"

    @property
    def stats(self) -> str:
        return f"{self.base}/stats"

    @property
    def shards(self) -> str:
        return f"{self.base}/shards"

    def gap(self, stream: str) -> str:
        return f"{self.base}/{stream}/gap"

    def stream_available(self, stream: str) -> str:
        return f"{self.base}/{stream}/available"

    def prediction(self, stream: str) -> str:
        return f"{self.base}/{stream}/prediction"

    def label(self, stream: str) -> str:
        return f"{self.base}/{stream}/label"

    def status(self, stream: str, modality: str) -> str:
        return f"{self.base}/{stream}/status/{modality}"

    def events(self, stream: str) -> str:
        return f"{self.base}/{stream}/events"

    def event(self, stream: str, label: str) -> str:
        return f"{self.base}/{stream}/event/{label_slug(label)}"

    def snapshot(self, stream: str) -> str:
        return f"{self.base}/{stream}/snapshot"

    def text(self, stream: str) -> str:
        return f"{self.base}/{stream}/text"

    def set(self, stream: str, what: str) -> str:
        """A stream's control input: ``what`` is ``enabled`` or ``events``."""
        return f"{self.base}/{stream}/set/{what}"

    def enabled(self, stream: str) -> str:
        return f"{self.base}/{stream}/enabled"

    def thresholds(self, stream: str) -> str:
        return f"{self.base}/{stream}/thresholds"

    def ha_discovery(self, stream: str) -> str:
        return f"{self._discovery}/sensor/{self.node}/{stream}_label/config"

    def ha_event_discovery(self, stream: str, label: str) -> str:
        slug = label_slug(label)
        return f"{self._discovery}/binary_sensor/{self.node}/{stream}_event_{slug}/config"

    def ha_image_discovery(self, stream: str) -> str:
        return f"{self._discovery}/image/{self.node}/{stream}_snapshot/config"

    def ha_switch_discovery(self, stream: str) -> str:
        return f"{self._discovery}/switch/{self.node}/{stream}_enabled/config"

    def ha_legacy(self, stream: str) -> str:
        """The discovery topic of 0.1.0 (ambiguous; cleared at start, never published)."""
        return f"{self._discovery}/sensor/{self.node}_{stream}/label/config"

    @property
    def _discovery(self) -> str:
        if self.discovery_prefix is None:
            raise ValueError("Home Assistant discovery is off (mqtt.discovery_prefix: null)")
        return self.discovery_prefix
