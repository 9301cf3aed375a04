"""The node's HTTP server, while it runs: WHIP ingest, the dashboard, ``/events``,
``/metrics``, ``/healthz`` and the event history, when the config has ``http:``. Its
live views (events, metrics, the dashboard's board) join the node's sinks meanwhile."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from streamer.config import Config
from streamer.sinks.base import Sink
from streamer.sinks.mqtt_sink import MqttSink

if TYPE_CHECKING:
    from streamer.app.node import Node


@contextlib.asynccontextmanager
async def node_http(node: Node, cfg: Config) -> AsyncIterator[None]:
    """The HTTP server (WHIP, page, /events, /metrics, /healthz) when configured."""
    if cfg.http is None or node.webrtc is None:
        yield
        return
    from streamer.web.board import StreamBoard
    from streamer.web.metrics import Metrics  # aiohttp, aiortc, prometheus: lazy
    from streamer.web.server import StreamInfo, WebServer
    from streamer.web.sinks import LiveEventsSink, MetricsSink
    from streamer.web.whip import WhipSessions

    whip = WhipSessions(node.webrtc, ice_servers=cfg.http.ice_servers)
    mqtt = next((s for s in node.sinks.sinks if isinstance(s, MqttSink)), None)
    metrics = Metrics(
        node.stats, refresh=node.refresh_stats,
        outbox_depth=lambda: mqtt.publisher.depth if mqtt is not None else 0,
        connected=lambda: mqtt.publisher.connected if mqtt is not None else False,
        peers=lambda: len(whip.sessions),
    )  # fmt: skip
    infos = [
        StreamInfo(
            s.id,
            s.video == "webrtc",
            s.audio == "webrtc",
            bool(s.text_topics(cfg.mqtt.prefix, cfg.node)),
        )  # fmt: skip
        for s in cfg.webrtc_streams
    ]
    board = StreamBoard(
        [(s.id, node.streams_by_id[s.id].modalities, "webrtc" in (s.video, s.audio))
         for s in cfg.streams],
        enabled=node.is_enabled,
    )  # fmt: skip
    web = WebServer(
        cfg.http, node=cfg.node, streams=infos, all_streams=[s.id for s in cfg.streams],
        whip=whip, events=node.events, metrics=metrics, store=node.store,
        snapshots=node.snapshots, board=board,
    )  # fmt: skip
    await web.start()
    node.web, node.board = web, board
    web_sinks: list[Sink] = [LiveEventsSink(node.events), MetricsSink(metrics), board]
    node.sinks.sinks.extend(web_sinks)
    try:
        yield
    finally:
        for s in web_sinks:
            node.sinks.sinks.remove(s)
        node.web = node.board = None
        await web.stop()
