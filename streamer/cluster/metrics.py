"""The controller's ``/metrics`` (and ``/healthz``), when the config has ``http:``.

Per stream, the counters its shard last reported (polled every ``ray.check_interval``),
labelled with the shard; per shard, whether it runs and where; the controller's
failovers and gap markers. Scraped, never pushed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from streamer.config import HttpConfig
from streamer.web.metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from streamer.cluster.controller import Controller


class _ClusterCollector(Collector):
    def __init__(self, c: Controller) -> None:
        self.c = c

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("streamer_shard_up", "1 while the shard runs",
                               labels=["shard", "host", "ray_node"])  # fmt: skip
        for sid, info in sorted(self.c.shards.items()):
            up.add_metric([str(sid), str(info.get("host") or ""), str(info.get("node_id") or "")],
                          1.0 if info.get("state") == "running" else 0.0)  # fmt: skip
        yield up
        yield CounterMetricFamily("streamer_failovers", "Shards lost with their node",
                                  value=self.c.failovers)  # fmt: skip
        gaps = CounterMetricFamily("streamer_gap_windows", "Windows announced as not produced",
                                   labels=["stream"])  # fmt: skip
        for stream, n in sorted(self.c.gaps.gap_windows.items()):
            gaps.add_metric([stream], n)
        yield gaps
        windows = CounterMetricFamily(
            "streamer_windows_out", "Windows published (as the shard last reported)",
            labels=["stream", "shard"],
        )  # fmt: skip
        dropped = CounterMetricFamily("streamer_dropped", "Items or windows dropped, by place",
                                      labels=["stream", "shard", "place"])  # fmt: skip
        for sid, st in sorted(self.c.stats.items()):
            for stream, body in sorted(st.get("streams", {}).items()):
                windows.add_metric([stream, str(sid)], body.get("windows_out", 0))
                for place, n in sorted(body.get("dropped_by", {}).items()):
                    dropped.add_metric([stream, str(sid), place], n)
        yield windows
        yield dropped


class ControllerWeb:
    def __init__(self, controller: Controller, cfg: HttpConfig) -> None:
        self.cfg = cfg
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_ClusterCollector(controller))
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=generate_latest(self.registry),
                            headers={"Content-Type": CONTENT_TYPE})  # fmt: skip

    async def _healthz(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok\n")

    async def start(self) -> None:
        app = web.Application()
        app.add_routes([web.get("/metrics", self._metrics), web.get("/healthz", self._healthz)])
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.cfg.host, self.cfg.port, reuse_address=True)
        try:
            await site.start()
        except OSError as e:
            await runner.cleanup()
            raise OSError(f"http.listen {self.cfg.listen}: {e.strerror or e}") from None
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
