"""``/metrics``: the node's counters in the Prometheus text format (prometheus-client).

Counters are read from :class:`~streamer.stats.Stats` when scraped (one source of truth,
nothing counted twice); the two latency histograms are observed per published window.
Each node has its own registry, so several nodes in one process (tests) do not clash.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from streamer.stats import Stats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _StatsCollector(Collector):
    def __init__(self, source: Metrics) -> None:
        self.m = source

    def collect(self) -> Iterator[Metric]:
        self.m.refresh()
        frames = CounterMetricFamily(
            "streamer_frames_in", "Items in per stream and modality", labels=["stream", "modality"]
        )
        dropped = CounterMetricFamily(
            "streamer_dropped", "Items or windows dropped, by place", labels=["stream", "place"]
        )
        late = CounterMetricFamily(
            "streamer_late",
            "Items that came after their window was out",
            labels=["stream", "modality"],
        )
        rejected = CounterMetricFamily(
            "streamer_rejected", "Malformed text events, by kind", labels=["stream", "kind"]
        )
        windows = CounterMetricFamily(
            "streamer_windows_out", "Windows predicted and published", labels=["stream"]
        )
        errors = CounterMetricFamily("streamer_source_errors", "Source failures", labels=["stream"])
        for sid, st in self.m.stats.streams.items():
            for m, n in st.frames_in.items():
                frames.add_metric([sid, m], n)
            for place, n in st.dropped.items():
                dropped.add_metric([sid, place], n)
            for m, n in st.late.items():
                late.add_metric([sid, m], n)
            for kind, n in st.rejected.items():
                rejected.add_metric([sid, kind], n)
            windows.add_metric([sid], st.windows_out)
            errors.add_metric([sid], st.errors)
        yield from (frames, dropped, late, rejected, windows, errors)
        yield GaugeMetricFamily(
            "streamer_outbox_depth", "Messages waiting for the broker",
            value=self.m.outbox_depth(),
        )
        yield GaugeMetricFamily(
            "streamer_broker_connected", "1 while connected to the MQTT broker",
            value=1.0 if self.m.connected() else 0.0,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "streamer_webrtc_publishers", "WHIP publishers connected", value=self.m.peers()
        )


class Metrics:
    def __init__(
        self,
        stats: Stats,
        *,
        refresh: Callable[[], None],
        outbox_depth: Callable[[], int],
        connected: Callable[[], bool],
        peers: Callable[[], int],
    ) -> None:
        self.stats = stats
        self.refresh = refresh
        self.outbox_depth = outbox_depth
        self.connected = connected
        self.peers = peers
        self.registry = CollectorRegistry(auto_describe=False)
        self.inference = Histogram(
            "streamer_inference_seconds", "Model time per window (batch time shared out)",
            ["stream"], registry=self.registry, buckets=BUCKETS,
        )  # fmt: skip
        self.end_to_publish = Histogram(
            "streamer_end_to_publish_seconds", "From a window's end to its prediction queued",
            ["stream"], registry=self.registry, buckets=BUCKETS,
        )  # fmt: skip
        self.registry.register(_StatsCollector(self))

    def observe(self, stream: str, inference_ms: float, end_to_publish_ms: float) -> None:
        self.inference.labels(stream).observe(inference_ms / 1e3)
        self.end_to_publish.labels(stream).observe(max(end_to_publish_ms, 0.0) / 1e3)

    def render(self) -> bytes:
        return generate_latest(self.registry)
