"""Sinks: where predictions go. MQTT is the one output (topics in DESIGN.md).

    topics      topic names of the contract
    outbox      the bounded, drop-oldest queue of messages awaiting the broker's ack
    mqtt        MqttPublisher: outbox + Last Will + reconnect loop with backoff
    discovery   Home Assistant discovery payloads
    announce    per-stream availability, discovery, clearing what removed streams left
                retained (imported by the node, not here)
    broker      EmbeddedBroker: an in-process broker for ``mqtt.url: embedded`` (amqtt;
                imported on demand, not here)
"""

from streamer.sinks.discovery import ha_label_config
from streamer.sinks.mqtt import MqttPublisher
from streamer.sinks.outbox import Message, Outbox
from streamer.sinks.topics import Topics

__all__ = ["Message", "MqttPublisher", "Outbox", "Topics", "ha_label_config"]
