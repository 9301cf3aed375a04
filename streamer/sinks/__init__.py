"""Sinks: where a node's predictions, statuses and stats go.

    base        the Sink interface, its events, BufferedSink (a sink with a slow destination)
    fanout      every event to each sink; one failing sink costs only itself
    mqtt_sink   MqttSink: the contract's topics (DESIGN.md), label on change, discovery
    mqtt        MqttPublisher: outbox + Last Will + reconnect loop with backoff
    outbox      the bounded, drop-oldest queue of messages awaiting the broker's ack
    spool       the outbox kept on disk across restarts (SQLite)
    topics      topic names of the contract
    discovery   Home Assistant discovery payloads
    announce    per-stream availability, discovery, clearing what removed streams left
    file        FileSink: predictions as JSON lines in a rotating file
    settings    the ``sinks:`` config section
    broker      EmbeddedBroker: an in-process broker for ``mqtt.url: embedded`` (amqtt)

Nothing is imported here: the config imports ``settings`` alone.
"""
