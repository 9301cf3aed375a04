"""The HTTP server's sinks: predictions to the page's ``/events`` and to ``/metrics``."""

from __future__ import annotations

from streamer.predictions import Prediction
from streamer.sinks.base import Event, LocalSink
from streamer.web.events import LiveEvents
from streamer.web.metrics import Metrics


class LiveEventsSink(LocalSink):
    """Each prediction to the browsers subscribed to its stream (drop-oldest per browser,
    counted by :class:`LiveEvents`)."""

    name = "events"

    def __init__(self, events: LiveEvents) -> None:
        self.events = events

    def publish(self, event: Event) -> None:
        if isinstance(event, Prediction):
            self.events.publish(event.stream, event.encode())


class MetricsSink(LocalSink):
    """The latency histograms of ``/metrics``, one observation per prediction."""

    name = "metrics"

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def publish(self, event: Event) -> None:
        if isinstance(event, Prediction):
            self.metrics.observe(event.stream, event.inference_ms, event.end_to_publish_ms)
