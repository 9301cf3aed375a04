"""The MQTT sink: a node's events as the contract's topics (:mod:`streamer.sinks.topics`).

It owns the publishing connection (:class:`~streamer.sinks.mqtt.MqttPublisher`: the
outbox, the Last Will on ``P/N/available``, the spool) and what the node keeps retained:
the label on change, the statuses, each stream's ``available`` and, where this process
owns ``available`` (``announce``), the Home Assistant discovery and the clearing of what
removed streams left (:mod:`streamer.sinks.announce`)::

    Prediction         -> P/N/S/prediction (mqtt.qos); P/N/S/label when the label changes
    Status             -> P/N/S/status/M   online | offline, retained
    StreamState        -> P/N/S/available  online | stopped, retained
    StatsReport        -> P/N/stats        qos 0
    EventMessage       -> P/N/S/events     qos 1; P/N/S/event/L ON (new) | OFF (end), retained
    SnapshotMessage    -> P/N/S/snapshot   JPEG, qos 1, retained; a newer one replaces one
                                           still waiting in the outbox (one per stream)

With ``event_labels`` it sets ``P/N/S/event/L`` to OFF for each stream and label at the
start (what a crashed run left ON is cleared) and, where it announces, has a binary
sensor discovered for each; with ``snapshot_streams``, an image entity for each of them.

At the exit it says what it could not deliver; ``failed`` is True when the configured
spool could not keep some of it (a disk read-only or full).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Sequence
from typing import Any, Self

from streamer.config import MqttConfig
from streamer.events.event import EventMessage
from streamer.predictions import Prediction
from streamer.sinks.announce import announced
from streamer.sinks.base import Event, StatsReport, Status, StreamState
from streamer.sinks.mqtt import MqttPublisher
from streamer.sinks.spool import Spool
from streamer.sinks.topics import Topics
from streamer.snapshots.snapshots import SnapshotMessage

log = logging.getLogger(__name__)


class LabelChanges:
    """The last label per stream: True the first time and whenever it differs."""

    def __init__(self) -> None:
        self._label: dict[str, str] = {}

    def changed(self, stream: str, label: str) -> bool:
        if self._label.get(stream) == label:
            return False
        self._label[stream] = label
        return True

    def forget(self, stream: str) -> None:
        self._label.pop(stream, None)


class MqttSink:
    name = "mqtt"

    def __init__(
        self,
        cfg: MqttConfig,
        topics: Topics,
        *,
        client_id: str,
        streams: Sequence[str],
        spool: Spool | None = None,
        announce: bool = True,
        event_labels: Sequence[str] = (),
        snapshot_streams: Sequence[str] = (),
    ) -> None:
        self.cfg = cfg
        self.snapshot_streams = list(snapshot_streams)
        self.event_labels = list(event_labels)
        self.topics = topics
        self.streams = list(streams)
        self.client_id = client_id
        self.announce = announce
        # the node drains for shutdown_timeout itself: closing then waits no longer
        self.publisher = MqttPublisher(
            cfg, topics, client_id=client_id, close_timeout=0.0, spool=spool, announce=announce
        )
        self.undelivered = 0  # after the exit: predictions neither delivered nor spooled
        self._labels = LabelChanges()
        self._announcing = contextlib.AsyncExitStack()

    @property
    def dropped(self) -> int:
        return self.publisher.dropped

    @property
    def failed(self) -> bool:
        return self.publisher.spool is not None and self.publisher.spool_lost > 0

    def publish(self, event: Event) -> None:
        pub, topics = self.publisher, self.topics
        if isinstance(event, Prediction):
            pub.enqueue(topics.prediction(event.stream), event.encode(), self.cfg.qos)
            if self._labels.changed(event.stream, event.label):
                pub.set_retained(topics.label(event.stream), event.label)
        elif isinstance(event, Status):
            state = "online" if event.online else "offline"
            pub.set_retained(topics.status(event.stream, event.modality), state)
        elif isinstance(event, StreamState):
            pub.set_retained(topics.stream_available(event.stream), event.state)
        elif isinstance(event, StatsReport):
            pub.enqueue(topics.stats, json.dumps(dict(event.body)).encode(), 0)
        elif isinstance(event, EventMessage):
            pub.enqueue(topics.events(event.stream), event.encode(), 1)
            if event.type != "update":
                state = "ON" if event.type == "new" else "OFF"
                pub.set_retained(topics.event(event.stream, event.label), state)
        elif isinstance(event, SnapshotMessage):
            pub.set_retained(topics.snapshot(event.stream), event.jpeg, coalesce=True)

    async def drain(self, timeout: float) -> int:  # noqa: ASYNC109 - returns a count
        await self._announcing.aclose()  # the discovery configs are queued before this
        await self.publisher.drain(timeout)
        return self.publisher.pending_predictions()

    async def __aenter__(self) -> Self:
        await self.publisher.__aenter__()
        for stream in self.streams:
            for label in self.event_labels:
                self.publisher.set_retained(self.topics.event(stream, label), "OFF")
        if self.announce:
            try:
                await self._announcing.enter_async_context(
                    announced(
                        self.cfg,
                        self.topics,
                        self.publisher,
                        self.streams,
                        client_id=f"{self.client_id}-scan",
                        event_labels=self.event_labels,
                        snapshot_streams=self.snapshot_streams,
                    )  # fmt: skip
                )
            except BaseException:
                await self.publisher.__aexit__(None, None, None)
                raise
        return self

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self._announcing.aclose()
        finally:
            await self.publisher.__aexit__(*exc)
        self._report_undelivered()

    def _report_undelivered(self) -> None:
        pub = self.publisher
        if pub.spool is not None:
            pub.spool.close()
            if pub.spooled:
                log.warning(
                    "%d predictions not delivered yet: spooled to %s, sent first at the next start",
                    pub.spooled, pub.spool.path,
                )  # fmt: skip
            self.undelivered = pub.spool_lost
            return
        self.undelivered = pub.pending_predictions()
        if self.undelivered:
            log.error("%d predictions were not delivered before shutdown", self.undelivered)
