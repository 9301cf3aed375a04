"""A running node: every stream of a config, one inference runner, the MQTT publisher.

``Node.run()`` returns when every source has ended (after the last window is published
and the outbox is empty) or when ``stop()`` is called (SIGINT/SIGTERM): then it drains,
stops the sources, flushes the windows, empties the outbox within ``shutdown_timeout``
and publishes ``stopped``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from streamer.clock import NODE_CLOCK, Clock
from streamer.config import Config
from streamer.frames import Modality, Window
from streamer.inference.model import LoadedModel, load_model
from streamer.inference.runner import InferenceRunner, Result
from streamer.pipeline.worker import StreamWorker
from streamer.predictions import PredictionBuilder, encode, new_run_id
from streamer.sinks.announce import announced, run_available
from streamer.sinks.broker import EmbeddedBroker
from streamer.sinks.mqtt import MqttPublisher
from streamer.sinks.spool import Spool
from streamer.sinks.topics import Topics
from streamer.sources.factory import open_sources
from streamer.sources.mqtt_text import MqttTextInput
from streamer.sources.webrtc import WebRTCHub
from streamer.stats import Stats
from streamer.web.events import LiveEvents

if TYPE_CHECKING:
    from streamer.web.metrics import Metrics
    from streamer.web.server import WebServer

log = logging.getLogger(__name__)


class Node:
    def __init__(
        self,
        cfg: Config,
        *,
        clock: Clock = NODE_CLOCK,
        loaded: LoadedModel | None = None,
        worker: int | None = None,
    ):
        self.cfg = cfg
        self.clock = clock
        self.worker = worker  # one of several processes (--workers): no "available" of its own
        self.run_id = new_run_id()
        self.loaded = loaded or load_model(cfg.model, cfg.window)
        self.stats = Stats([s.id for s in cfg.streams])
        self._stop = asyncio.Event()
        self.published = 0
        self.undelivered = 0
        self._workers: dict[str, StreamWorker] = {}
        self._text_in: MqttTextInput | None = None
        self.webrtc = WebRTCHub() if cfg.http is not None else None
        self.events = LiveEvents()  # predictions for the HTTP server's /events
        self.metrics: Metrics | None = None
        self.web: WebServer | None = None
        self._spool = Spool(cfg.mqtt.outbox_dir) if cfg.mqtt.outbox_dir is not None else None
        if self._spool is not None:
            self._spool.open()  # ConfigError (exit 2) when another process holds it

    def stop(self) -> None:
        self._stop.set()

    @contextlib.asynccontextmanager
    async def _broker(self) -> AsyncIterator[Config]:
        """An embedded broker when ``mqtt.url`` is ``embedded``; the config pointed at it."""
        if not self.cfg.mqtt.embedded:
            yield self.cfg
            return
        port = None if self.cfg.mqtt.url == "embedded" else self.cfg.mqtt.port
        async with EmbeddedBroker(port=port) as broker:
            log.info("embedded MQTT broker on %s", broker.url)
            mqtt = self.cfg.mqtt.model_copy(update={"url": broker.url})
            yield self.cfg.model_copy(update={"mqtt": mqtt})

    async def run(self) -> int:
        async with self._broker() as cfg:
            topics = Topics(cfg.mqtt.prefix, cfg.node, cfg.mqtt.discovery_prefix)
            spec = self.loaded.spec
            builder = PredictionBuilder(cfg.node, self.run_id, self.loaded.id)
            cid = cfg.mqtt.client_id or f"streamer-{cfg.node}-{self.run_id[:8]}"
            if self.worker is not None:
                cid += f"-w{self.worker}"  # a fixed client_id must differ between workers
            fusion = self.loaded.make_fusion()
            # the node drains for shutdown_timeout itself: closing then waits no longer
            publisher = MqttPublisher(
                cfg.mqtt, topics, client_id=cid, close_timeout=0.0, spool=self._spool,
                announce=self.worker is None,
            )  # fmt: skip

            def status(stream: str, modality: Modality, online: bool) -> None:
                publisher.set_retained(
                    topics.status(stream, modality), "online" if online else "offline"
                )

            async def on_result(r: Result) -> None:
                now = self.clock.now_ns()
                payload = builder.build(r.window, r.probs, inference_ms=r.inference_ms, now_ns=now)
                publisher.enqueue(topics.prediction(r.window.stream), encode(payload), cfg.mqtt.qos)
                if builder.label_changed(r.window.stream, payload["label"]):
                    publisher.set_retained(topics.label(r.window.stream), payload["label"])
                st = self.stats[r.window.stream]
                st.windows_out += 1
                e2p = payload["latency_ms"]["end_to_publish"]
                st.latency_ms.append(e2p)
                st.inference_ms.append(r.inference_ms)
                self.published += 1
                if self.web is not None:
                    self.events.publish(r.window.stream, encode(payload))
                if self.metrics is not None:
                    self.metrics.observe(r.window.stream, r.inference_ms, e2p)

            def on_drop(w: Window, place: str) -> None:
                self.stats[w.stream].dropped[place] += 1
                if place != "result_error":  # a failed result had taken its seq already
                    builder.skip(w.stream)  # the loss shows as a gap in seq

            runner_cm = InferenceRunner(
                fusion, spec, cfg.model, on_result, device=self.loaded.device, on_drop=on_drop
            )
            async with publisher, runner_cm as runner:
                workers = self._workers
                routes = {
                    t: s.id for s in cfg.streams for t in s.text_topics(cfg.mqtt.prefix, cfg.node)
                }
                text_in = MqttTextInput(cfg.mqtt, routes, clock=self.clock, client_id=f"{cid}-text")
                self._text_in = text_in
                for s in cfg.streams:
                    text = text_in.source(s.id) if s.id in routes.values() else None
                    workers[s.id] = StreamWorker(
                        s,
                        window=cfg.window,
                        spec=spec,
                        clock=self.clock,
                        sources=open_sources(
                            s, spec=spec, clock=self.clock, webrtc=self.webrtc, text=text
                        ),
                        text=text,
                        runner=runner,
                        stats=self.stats[s.id],
                        status=status,
                    )
                    for m in workers[s.id].modalities:
                        status(s.id, m, False)

                async with (
                    text_in,
                    self._web(cfg, publisher),
                    self._announce(cfg, publisher, topics, cid),
                ):
                    ended = await self._run_workers(list(workers.values()), publisher, topics)
                log.debug("shutdown: sources %s", "ended" if ended else "stopped")
                if not ended:
                    for w in workers.values():
                        await w.flush()
                await runner.drain()
                log.debug("shutdown: inference drained")
                for w in workers.values():
                    for m in w.modalities:
                        status(w.id, m, False)
                self._publish_stats(publisher, topics)
                left = await publisher.drain(cfg.shutdown_timeout)
                self.undelivered = publisher.pending_predictions()
                log.debug("shutdown: outbox drained, %d left", left)
                for sid, n in sorted(builder.counts().items()):
                    lost = builder.skipped(sid)
                    log.info("stream %s: %d predictions, seq 0-%d, run %s", sid, n - lost,
                             n - 1, self.run_id)  # fmt: skip
                    if lost:
                        log.warning("stream %s: %d windows lost after alignment (gaps in seq; "
                                    "stats dropped_by says where)", sid, lost)  # fmt: skip
            log.debug("shutdown: publisher closed")
        return self._report_undelivered(publisher)

    def _report_undelivered(self, publisher: MqttPublisher) -> int:
        """Say what shutdown could not deliver; the exit code: 1 when the configured
        spool failed to keep some of it (a disk read-only or full), else 0."""
        if publisher.spool is not None:
            publisher.spool.close()
            if publisher.spooled:
                log.warning(
                    "%d predictions not delivered yet: spooled to %s, sent first at the next start",
                    publisher.spooled, publisher.spool.path,
                )  # fmt: skip
            self.undelivered = publisher.spool_lost
            return 1 if publisher.spool_lost else 0
        if self.undelivered:
            log.error("%d predictions were not delivered before shutdown", self.undelivered)
        return 0

    @contextlib.asynccontextmanager
    async def _web(self, cfg: Config, publisher: MqttPublisher) -> AsyncIterator[None]:
        """The HTTP server (WHIP, page, /events, /metrics, /healthz) when configured."""
        if cfg.http is None or self.webrtc is None:
            yield
            return
        from streamer.web.metrics import Metrics  # aiohttp, aiortc, prometheus: lazy
        from streamer.web.server import StreamInfo, WebServer
        from streamer.web.whip import WhipSessions

        whip = WhipSessions(self.webrtc, ice_servers=cfg.http.ice_servers)
        self.metrics = Metrics(
            self.stats, refresh=self._refresh_stats, outbox_depth=lambda: publisher.depth,
            connected=lambda: publisher.connected, peers=lambda: len(whip.sessions),
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
        web = WebServer(
            cfg.http, node=cfg.node, streams=infos, all_streams=[s.id for s in cfg.streams],
            whip=whip, events=self.events, metrics=self.metrics,
        )  # fmt: skip
        await web.start()
        self.web = web
        try:
            yield
        finally:
            self.web = None
            await web.stop()

    def _announce(
        self, cfg: Config, publisher: MqttPublisher, topics: Topics, cid: str
    ) -> contextlib.AbstractAsyncContextManager[object]:
        """Home Assistant discovery and clearing what removed streams left retained: the
        job of the process owning ``available`` (a --workers supervisor does it)."""
        if self.worker is not None:
            return contextlib.nullcontext()
        ids = [s.id for s in cfg.streams]
        return announced(cfg.mqtt, topics, publisher, ids, client_id=f"{cid}-scan")

    async def _run_workers(
        self, workers: list[StreamWorker], publisher: MqttPublisher, topics: Topics
    ) -> bool:
        """Run the workers until all end (True) or stop() is called (False)."""
        async with asyncio.TaskGroup() as tg:
            stats_task = tg.create_task(self._stats_loop(publisher, topics), name="stats")
            runs = [
                tg.create_task(
                    run_available(publisher, topics, w.id, w.run()), name=f"stream-{w.id}"
                )  # P/N/S/available: online while the stream runs
                for w in workers
            ]
            stop: asyncio.Task[object] = tg.create_task(self._stop.wait(), name="stop-signal")
            pending: set[asyncio.Task[None]] = set(runs)
            while pending and not stop.done():
                done, _ = await asyncio.wait([stop, *pending], return_when=asyncio.FIRST_COMPLETED)
                pending.difference_update(done)
            ended = not pending
            for t in (*runs, stop, stats_task):
                t.cancel()
        return ended

    async def _stats_loop(self, publisher: MqttPublisher, topics: Topics) -> None:
        while True:
            await asyncio.sleep(self.cfg.mqtt.stats_interval)
            self._publish_stats(publisher, topics)

    def _publish_stats(self, publisher: MqttPublisher, topics: Topics) -> None:
        publisher.enqueue(topics.stats, json.dumps(self.snapshot()).encode(), 0)

    def _refresh_stats(self) -> None:
        """Copy the counters kept elsewhere (aligner, sources, text inputs) into ``stats``."""
        for sid, w in self._workers.items():
            st = self.stats[sid]
            st.late = Counter(w.aligner.stats.late)
            st.dropped["aligner"] = sum(w.aligner.stats.dropped.values())
            st.dropped["source"] = sum(src.dropped for src in w.sources)
            rejected: Counter[str] = Counter()
            if self.webrtc is not None and sid in self.webrtc.sources:
                rejected.update(self.webrtc.sources[sid].rejected)  # its data channel's
            if self._text_in is not None:
                rejected.update(self._text_in.rejected.get(sid, {}))
                if self._text_in.discarded[sid]:
                    st.dropped["text_queue"] = self._text_in.discarded[sid]
            st.rejected = rejected

    def snapshot(self) -> dict[str, object]:
        """The stats message: counters since start, rates since the previous snapshot."""
        self._refresh_stats()
        return {
            "node": self.cfg.node,
            **({"worker": self.worker} if self.worker is not None else {}),
            "run": self.run_id,
            "ts": self.clock.now_ns() / 1e9,
            "streams": self.stats.snapshot(),
        }
