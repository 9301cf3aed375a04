"""The application: one node's streams wired from sources to sinks. Read this first.

::

    sources --(items)--> StreamPipeline: aligner --(windows)--> InferenceRunner
        --(Result)--> PredictionBuilder --(Prediction)--> Fanout --> MqttSink, FileSink, ...

Per stream, a :class:`~streamer.app.stream.StreamPipeline` reads its sources (a task
each, reopened with backoff), aligns what they give into windows and submits them; one
:class:`~streamer.inference.runner.InferenceRunner` batches the windows of every stream
through the model; each result becomes a typed
:class:`~streamer.predictions.Prediction` (``seq`` per stream, a lost window a gap) that
the :class:`~streamer.sinks.fanout.Fanout` hands to every sink, with the statuses, the
streams' states and the periodic stats. The streams run under one task group.

``Node.run()`` returns when every source has ended (after the last window is published
and the sinks are drained) or when ``stop()`` is called (SIGINT/SIGTERM/SIGHUP): then it
stops the sources, flushes the windows, drains the sinks within ``shutdown_timeout``
and leaves them (MQTT: ``stopped``). Its value is the exit code: 1 when a sink lost what
it had promised to keep (the spool on a full disk), else 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from streamer.app.control import ModelSwitch
from streamer.app.node_control import NodeControl
from streamer.app.node_web import node_http
from streamer.app.stream import StreamPipeline
from streamer.clock import NODE_CLOCK, Clock
from streamer.config import Config, StreamConfig
from streamer.events.event import EventMessage
from streamer.events.setup import node_events
from streamer.frames import Modality, Window
from streamer.history.store import EventStore
from streamer.inference.model import LoadedModel, load_model
from streamer.inference.runner import Fusion, InferenceRunner, Result
from streamer.predictions import PredictionBuilder, new_run_id
from streamer.sinks.base import Sink, StatsReport, Status, StreamState
from streamer.sinks.broker import broker_for
from streamer.sinks.fanout import Fanout
from streamer.sinks.file import FileSink
from streamer.sinks.mqtt_sink import MqttSink
from streamer.sinks.spool import Spool
from streamer.sinks.topics import Topics
from streamer.snapshots.snapshots import EventSnapshots, SnapshotMessage, node_snapshots
from streamer.sources.base import Source
from streamer.sources.factory import open_sources
from streamer.sources.mqtt_text import MqttTextInput
from streamer.sources.webrtc import WebRTCHub
from streamer.stats import Stats
from streamer.web.events import LiveEvents

if TYPE_CHECKING:
    from streamer.web.board import StreamBoard
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
        sinks: list[Sink] | None = None,
        sources: Callable[[StreamConfig], list[Source]] | None = None,
        fusion: Callable[[], Fusion] | None = None,
        placement: dict[str, Any] | None = None,
    ):
        """``sinks``: in place of those the config names (MQTT, file); ``sources``: opens
        a stream's sources in place of its URLs (a test's fakes); ``fusion``: what infers
        in place of the loaded model (a shard's runner actor, --engine ray); ``placement``:
        where this node runs, said in its stats (a shard's Ray node)."""
        self.cfg = cfg
        self.clock = clock
        self.worker = worker  # one of several processes (--workers): no "available" of its own
        self.run_id = new_run_id()
        self.loaded = loaded or load_model(cfg.model, cfg.window)
        self.stats = Stats([s.id for s in cfg.streams])
        self.builder = PredictionBuilder(cfg.node, self.run_id, self.loaded.id)
        # events (an ``events:`` section): their transitions go to the sinks
        self.tracker, self.event_labels = node_events(cfg, self.loaded.id, self.run_id)
        # recent JPEGs per stream with video (with events: or http:), None without
        self.snapshots = node_snapshots(
            cfg.snapshots, {s.id: s.video is not None for s in cfg.streams},
            events=cfg.events is not None, http=cfg.http is not None,
            window_s=cfg.window.length,
        )  # fmt: skip
        self._stop = asyncio.Event()
        self.published = 0
        self.streams_by_id: dict[str, StreamPipeline] = {}
        self._text_in: MqttTextInput | None = None
        self.switch: ModelSwitch | None = None  # P/N/set/model, while running
        self.control: NodeControl | None = None  # set/model, set/enabled, set/events
        self.webrtc = WebRTCHub() if cfg.http is not None else None
        self.events = LiveEvents()  # predictions for the HTTP server's /events
        self.web: WebServer | None = None
        self.board: StreamBoard | None = None  # the dashboard's view, while HTTP serves
        self.sinks = Fanout(sinks or ())
        if self.tracker is not None:
            self.tracker.subscribe(self.sinks.publish)
            if self.snapshots is not None:  # each event's peak JPEG follows its message
                self.tracker.subscribe(EventSnapshots(self.snapshots, self._snapshot_out))
        # the event history (/api/events): opened here, a dir it cannot take is exit 2
        self.store: EventStore | None = None
        self._snapshot: SnapshotMessage | None = None  # the one taken for the message in hand
        if self.tracker is not None:
            self.store = EventStore(cfg.history, now=lambda: self.clock.now_ns() / 1e9)
            self.store.open()
            self.tracker.subscribe(self._record_event)
        self._own_sinks = sinks is None
        self._open_sources = sources
        self._fusion = fusion
        self.placement = placement
        self._spool: Spool | None = None
        if self._own_sinks:  # opened here: a spool or file it cannot take is exit 2
            if cfg.mqtt.outbox_dir is not None:
                self._spool = Spool(cfg.mqtt.outbox_dir)
                self._spool.open()  # ConfigError when another process holds it
            if cfg.sinks.file is not None:
                self.sinks.sinks.append(FileSink(cfg.sinks.file))

    def stop(self) -> None:
        self._stop.set()

    @property
    def client_id(self) -> str:
        cid = self.cfg.mqtt.client_id or f"streamer-{self.cfg.node}-{self.run_id[:8]}"
        # a fixed client_id must differ between workers
        return cid if self.worker is None else f"{cid}-w{self.worker}"

    async def run(self) -> int:
        async with broker_for(self.cfg.mqtt) as mqtt:
            cfg = self.cfg.model_copy(update={"mqtt": mqtt})
            if self._own_sinks:
                self.sinks.sinks.insert(0, self._mqtt_sink(cfg))
            fusion = self._fusion() if self._fusion is not None else self.loaded.make_fusion()
            runner_cm = InferenceRunner(
                fusion, self.loaded.spec, cfg.model, self._on_result,
                device=self.loaded.device, on_drop=self._on_drop, model=self.loaded.id,
            )  # fmt: skip
            async with self.sinks, runner_cm as runner, self._history():
                text_in = self._text_input(cfg)
                streams = self._streams(cfg, runner, text_in)
                self.switch = ModelSwitch(cfg, runner, self.loaded)
                if self._fusion is not None:  # the model runs elsewhere (a runner actor)
                    self.switch.unsupported = "the model runs in runner actors (--engine ray): "\
                        "restart with model.checkpoint set instead"
                self.control = NodeControl(
                    cfg, self.switch, streams, self.tracker, client_id=f"{self.client_id}-control"
                )
                async with text_in, self.control, node_http(self, cfg):
                    await self.control.wait_ready()  # a retained set/enabled OFF holds
                    ended = await self._run_streams(list(streams.values()))
                log.debug("shutdown: sources %s", "ended" if ended else "stopped")
                if not ended:
                    for w in streams.values():
                        await w.flush()
                await runner.drain()
                log.debug("shutdown: inference drained")
                if self.tracker is not None:
                    self.tracker.close_all("stopped")  # (each stream's ended with it)
                for w in streams.values():
                    for m in w.modalities:
                        self._status(w.id, m, False)
                self.sinks.publish(StatsReport(self.snapshot()))
                left = await self.sinks.drain(cfg.shutdown_timeout)
                log.debug("shutdown: sinks drained, %d predictions left", left)
                self._log_counts()
            log.debug("shutdown: sinks closed")
        return 1 if self.sinks.failed else 0

    def _mqtt_sink(self, cfg: Config) -> MqttSink:
        topics = Topics(cfg.mqtt.prefix, cfg.node, cfg.mqtt.discovery_prefix)
        return MqttSink(
            cfg.mqtt, topics, client_id=self.client_id, streams=[s.id for s in cfg.streams],
            spool=self._spool, announce=self.worker is None, event_labels=self.event_labels,
            snapshot_streams=list(self.snapshots.rings) if self.snapshots is not None else (),
        )  # fmt: skip

    def _streams(
        self, cfg: Config, runner: InferenceRunner, text_in: MqttTextInput
    ) -> dict[str, StreamPipeline]:
        for s in cfg.streams:
            text = text_in.source(s.id) if s.id in text_in.routes.values() else None
            w = StreamPipeline(
                s,
                window=cfg.window,
                spec=self.loaded.spec,
                clock=self.clock,
                sources=self._sources_of(s, takes_text=text is not None),
                text=text,
                runner=runner,
                stats=self.stats[s.id],
                status=self._status,
            )
            self.streams_by_id[s.id] = w
            for m in w.modalities:
                self._status(s.id, m, False)
        return self.streams_by_id

    def _sources_of(self, s: StreamConfig, *, takes_text: bool) -> list[Source]:
        """The stream's video and audio sources (a WebRTC one's data channel also sends
        text, where the stream takes it)."""
        if self._open_sources is not None:
            return self._open_sources(s)
        return open_sources(
            s, spec=self.loaded.spec, clock=self.clock, webrtc=self.webrtc,
            takes_text=takes_text,
            snapshots=self.snapshots.ring(s.id) if self.snapshots is not None else None,
            capture=self.cfg.capture,
        )  # fmt: skip

    # -- what flows to the sinks ---------------------------------------------------------
    def _snapshot_out(self, s: SnapshotMessage) -> None:
        """An event's peak JPEG: to the sinks, and to the history with its message (the
        listener after this one)."""
        self.sinks.publish(s)
        self._snapshot = s

    def _record_event(self, m: EventMessage) -> None:
        """An event's transition into the history, with the peak JPEG taken for it."""
        assert self.store is not None
        s, self._snapshot = self._snapshot, None
        self.store.record(m, s.jpeg if s is not None and s.event_id == m.event["id"] else None)

    @contextlib.asynccontextmanager
    async def _history(self) -> AsyncIterator[None]:
        """Closes the store once the tracker's last messages ("stopped") are in it."""
        try:
            yield
        finally:
            if self.store is not None:
                await self.store.aclose()

    def _status(self, stream: str, modality: Modality, online: bool) -> None:
        self.sinks.publish(Status(stream, modality, online))

    async def _on_result(self, r: Result) -> None:
        p = self.builder.build(
            r.window, r.probs, inference_ms=r.inference_ms, now_ns=self.clock.now_ns(),
            model=r.model, tags=r.tags,
        )  # fmt: skip
        self.sinks.publish(p)
        if self.tracker is not None:
            self.tracker.observe(p)  # its transitions follow the prediction to the sinks
        st = self.stats[r.window.stream]
        st.windows_out += 1
        st.latency_ms.append(p.end_to_publish_ms)
        st.inference_ms.append(r.inference_ms)
        self.published += 1

    def _on_drop(self, w: Window, place: str) -> None:
        self.stats[w.stream].dropped[place] += 1
        if place != "result_error":  # a failed result had taken its seq already
            self.builder.skip(w.stream)  # the loss shows as a gap in seq

    def _log_counts(self) -> None:
        for sid, n in sorted(self.builder.counts().items()):
            lost = self.builder.skipped(sid)
            log.info("stream %s: %d predictions, seq 0-%d, run %s", sid, n - lost, n - 1,
                     self.run_id)  # fmt: skip
            if lost:
                log.warning("stream %s: %d windows lost after alignment (gaps in seq; "
                            "stats dropped_by says where)", sid, lost)  # fmt: skip

    # -- the inputs beside the sources ---------------------------------------------------
    def _text_input(self, cfg: Config) -> MqttTextInput:
        """The node's one MQTT text connection; it feeds a text source per stream."""
        routes = {t: s.id for s in cfg.streams for t in s.text_topics(cfg.mqtt.prefix, cfg.node)}
        self._text_in = MqttTextInput(
            cfg.mqtt, routes, clock=self.clock, client_id=f"{self.client_id}-text"
        )
        return self._text_in

    # -- the streams' tasks --------------------------------------------------------------
    async def _run_streams(self, streams: list[StreamPipeline]) -> bool:
        """Run the streams until all end (True) or stop() is called (False)."""
        async with asyncio.TaskGroup() as tg:
            stats_task = tg.create_task(self._stats_loop(), name="stats")
            runs = [tg.create_task(self._run_stream(w), name=f"stream-{w.id}") for w in streams]
            stop: asyncio.Task[object] = tg.create_task(self._stop.wait(), name="stop-signal")
            pending: set[asyncio.Task[None]] = set(runs)
            while pending and not stop.done():
                done, _ = await asyncio.wait([stop, *pending], return_when=asyncio.FIRST_COMPLETED)
                pending.difference_update(done)
            ended = not pending
            for t in (*runs, stop, stats_task):
                t.cancel()
        return ended

    async def _run_stream(self, w: StreamPipeline) -> None:
        """``online`` while the stream runs, ``stopped`` once it ended or was cancelled;
        its open events end before that (``stream_ended``, or ``stopped``)."""
        self.sinks.publish(StreamState(w.id, "online"))
        ended = False
        try:
            await w.run()
            ended = True
        finally:
            if self.tracker is not None:
                self.tracker.close_stream(w.id, "stream_ended" if ended else "stopped")
            self.sinks.publish(StreamState(w.id, "stopped"))

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.mqtt.stats_interval)
            self.sinks.publish(StatsReport(self.snapshot()))

    def refresh_stats(self) -> None:
        """Copy the counters kept elsewhere (aligner, sources, text inputs) into ``stats``."""
        for sid, w in self.streams_by_id.items():
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

    def is_enabled(self, stream: str) -> bool:
        """False while ``stream`` is paused (``P/N/S/set/enabled OFF``)."""
        w = self.streams_by_id.get(stream)
        return w is None or w.enabled

    def snapshot(self) -> dict[str, Any]:
        """The stats message: counters since start, rates since the previous snapshot."""
        self.refresh_stats()
        streams = self.stats.snapshot()
        for sid, body in streams.items():
            body["enabled"] = self.is_enabled(sid)
        return {
            "node": self.cfg.node,
            **({"worker": self.worker} if self.worker is not None else {}),
            **(self.placement or {}),
            "run": self.run_id,
            "ts": self.clock.now_ns() / 1e9,
            "streams": streams,
            "sinks": self.sinks.counters(),
            **({"model": self.switch.counters()} if self.switch is not None else {}),
            **({"control": self.control.counters()} if self.control is not None else {}),
            **({"events": self.tracker.counters()} if self.tracker is not None else {}),
            **({"history": self.store.counters()} if self.store is not None else {}),
            **({"snapshots": self.snapshots.counters()} if self.snapshots is not None else {}),
            **({"dashboard": self.board.counters()} if self.board is not None else {}),
        }
