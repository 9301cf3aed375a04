"""MQTT topic names (the contract table in DESIGN.md), built in one place.

``P`` = prefix, ``N`` = node, ``S`` = stream id, ``M`` = modality::

    P/N/available             online | stopped | offline (Last Will)     1 / retained
    P/N/S/prediction          prediction JSON                             qos / no
    P/N/S/label               top label, only when it changes             1 / retained
    P/N/S/status/M            online | offline                            1 / retained
    P/N/S/text                text input                                  subscribed
    P/N/stats                 stats JSON                                  0 / no
    homeassistant/sensor/N_S/label/config   discovery                     1 / retained
"""

from __future__ import annotations

from dataclasses import dataclass

HA_DISCOVERY_PREFIX = "homeassistant"


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str
    node: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.node}"

    @property
    def available(self) -> str:
        return f"{self.base}/available"

    @property
    def stats(self) -> str:
        return f"{self.base}/stats"

    def prediction(self, stream: str) -> str:
        return f"{self.base}/{stream}/prediction"

    def label(self, stream: str) -> str:
        return f"{self.base}/{stream}/label"

    def status(self, stream: str, modality: str) -> str:
        return f"{self.base}/{stream}/status/{modality}"

    def text(self, stream: str) -> str:
        return f"{self.base}/{stream}/text"

    def ha_discovery(self, stream: str) -> str:
        return f"{HA_DISCOVERY_PREFIX}/sensor/{self.node}_{stream}/label/config"
