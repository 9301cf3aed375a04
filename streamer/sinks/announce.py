"""The node's retained footprint: per-stream availability, Home Assistant discovery, and
clearing what an earlier run left behind for streams that are no longer configured.

Run by the process that owns the node's ``available`` (a node on its own, or the
``--workers`` supervisor, which knows every stream; a worker knows only its share)::

    connect a short-lived subscriber (the node's credentials)
      -> subscribe to the node's own retained topics: P/N/+/label, P/N/+/status/+,
         P/N/+/available, P/N/+/event/+, D/sensor/N/+/config, D/binary_sensor/N/+/config
         and the 0.1.0 discovery D/sensor/+/label/config
      -> take the retained messages until none came for QUIET_S, SCAN_S after the
         subscription at most, MAX_SCAN at most (MQTT marks no end of the retained ones)
      -> publish an empty retained payload (which deletes it) to each topic of a stream no
         longer in the config, and to the 0.1.0 discovery topics of this node; MAX_CLEAR
         at most, one log line with the count
      -> publish the discovery config of every configured stream (its label sensor, a
         binary sensor per event label, an image where it has snapshots, and a switch)

A discovery config is cleared only when its ``state_topic`` is this node's own
``P/N/S/label``: a 0.1.0 topic ``D/sensor/a_b_c/label/config`` can belong to node ``a``
or ``a_b``, its payload says which. The old topics are cleared before the new config
goes out, so Home Assistant removes the old entity before it sees the new one. What
the scan missed (a broker slower than QUIET_S) is cleared at the next start; nothing
configured is ever cleared (an event label's binary sensor is cleared once the label is
no longer among the events' labels; its ``P/N/S/event/L`` only with its stream, as this
run may already have set it). If the broker is not reachable before the node stops, the
discovery configs are still queued (and the clearing skipped).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Iterable, Mapping, Sequence
from typing import Any

import aiomqtt

from streamer.config import ID_RE, MqttConfig
from streamer.mqttconn import reconnect_forever
from streamer.sinks.discovery import (
    ha_event_config,
    ha_image_config,
    ha_label_config,
    ha_switch_config,
)
from streamer.sinks.mqtt import MqttPublisher
from streamer.sinks.topics import Topics, label_slug

log = logging.getLogger(__name__)

ONLINE = "online"
STOPPED = "stopped"
OFFLINE = "offline"

QUIET_S = 0.3  # the retained messages came: none for this long after the last one
SCAN_S = 3.0  # at most this long after the subscription is acknowledged
MAX_SCAN = 10_000  # retained messages looked at
MAX_CLEAR = 1_000  # topics cleared per start
MAX_CONFIG = 65_536  # bytes of a discovery payload worth parsing


def scan_filters(topics: Topics) -> list[str]:
    base = topics.base
    filters = [f"{base}/+/label", f"{base}/+/status/+", f"{base}/+/available"]
    filters += [f"{base}/+/enabled", f"{base}/+/thresholds"]
    filters += [f"{base}/+/event/+", f"{base}/+/snapshot"]
    if topics.discovery_prefix is not None:
        dp = topics.discovery_prefix
        filters += [f"{dp}/sensor/{topics.node}/+/config", f"{dp}/sensor/+/label/config"]
        filters.append(f"{dp}/binary_sensor/{topics.node}/+/config")
        filters.append(f"{dp}/image/{topics.node}/+/config")
        filters.append(f"{dp}/switch/{topics.node}/+/config")
    return filters


def _config_topic(payload: bytes, key: str = "state_topic") -> str | None:
    """The topic under ``key`` in a discovery payload, if it is one."""
    if len(payload) > MAX_CONFIG:
        return None
    try:
        topic = json.loads(payload).get(key)
    except (ValueError, AttributeError, RecursionError):
        return None
    return topic if isinstance(topic, str) else None


def _own_stream(topics: Topics, payload: bytes) -> str | None:
    """The stream a discovery payload belongs to, if its state topic is this node's."""
    state = _config_topic(payload)
    head, tail = f"{topics.base}/", "/label"
    if state is None or not state.startswith(head) or not state.endswith(tail):
        return None
    stream = state[len(head) : -len(tail)]
    return stream if ID_RE.match(stream) else None


def _own_event(topics: Topics, payload: bytes) -> tuple[str, str] | None:
    """(stream, label slug) of a binary sensor's payload whose state topic is this node's
    ``P/N/S/event/L``."""
    state = _config_topic(payload)
    head = f"{topics.base}/"
    if state is None or not state.startswith(head):
        return None
    parts = state[len(head) :].split("/")
    if len(parts) != 3 or parts[1] != "event" or not ID_RE.match(parts[0]):
        return None
    return parts[0], parts[2]


def stale_topics(
    topics: Topics,
    keep: Iterable[str],
    found: Mapping[str, bytes],
    event_labels: Sequence[str] = (),
    snapshot_streams: Iterable[str] = (),
) -> list[str]:
    """The topics of ``found`` (retained topic -> payload) to clear, in topic order: a
    snapshot and its image entity go with the stream, or when it has no snapshots now."""
    keep = set(keep)
    snapping = set(snapshot_streams)
    slugs = {label_slug(x) for x in event_labels}
    stale: list[str] = []
    base = f"{topics.base}/"
    dp = f"{topics.discovery_prefix}/sensor/" if topics.discovery_prefix is not None else None
    bdp = f"{topics.discovery_prefix}/binary_sensor/{topics.node}/"
    idp = f"{topics.discovery_prefix}/image/{topics.node}/"
    sdp = f"{topics.discovery_prefix}/switch/{topics.node}/"
    for topic in sorted(found):
        if topic.startswith(base):
            parts = topic[len(base) :].split("/")
            own = parts[1:] in (["label"], ["available"], ["enabled"], ["thresholds"]) or (
                len(parts) == 3 and parts[1] in ("status", "event")
            )
            if own and ID_RE.match(parts[0]) and parts[0] not in keep:
                stale.append(topic)
            elif parts[1:] == ["snapshot"] and ID_RE.match(parts[0]) and parts[0] not in snapping:
                stale.append(topic)
        elif dp is not None and topic.startswith(sdp):
            name = topic[len(sdp) :].removesuffix("_enabled/config")
            if (ID_RE.match(name) and topic == topics.ha_switch_discovery(name)
                    and _config_topic(found[topic]) == topics.enabled(name)
                    and name not in keep):  # fmt: skip
                stale.append(topic)
        elif dp is not None and topic.startswith(idp):
            name = topic[len(idp) :].removesuffix("_snapshot/config")
            if (ID_RE.match(name) and topic == topics.ha_image_discovery(name)
                    and _config_topic(found[topic], "image_topic") == topics.snapshot(name)
                    and name not in snapping):  # fmt: skip
                stale.append(topic)
        elif dp is not None and topic.startswith(bdp):
            ev = _own_event(topics, found[topic])
            if ev is None or topic != topics.ha_event_discovery(*ev):
                continue  # (a slug is its own slug: the topic is rebuilt from it)
            if ev[0] not in keep or ev[1] not in slugs:
                stale.append(topic)
        elif dp is not None and topic.startswith(dp):
            stream = _own_stream(topics, found[topic])
            if stream is None:
                continue
            if topic == topics.ha_legacy(stream):  # superseded by ha_discovery(stream)
                stale.append(topic)
            elif topic == topics.ha_discovery(stream) and stream not in keep:
                stale.append(topic)
    return stale


async def scan_retained(
    cfg: MqttConfig,
    topics: Topics,
    *,
    client_id: str,
    quiet: float = QUIET_S,
    limit: float = SCAN_S,
) -> dict[str, bytes]:
    """The retained messages on :func:`scan_filters` (topic -> payload), reconnecting
    until one connection has read them."""
    found: dict[str, bytes] = {}
    done = asyncio.Event()

    async def session(client: aiomqtt.Client) -> None:
        found.clear()  # a second connection reads them all again
        await client.subscribe([(f, 1) for f in scan_filters(topics)])
        loop = asyncio.get_running_loop()
        end = loop.time() + limit
        messages = aiter(client.messages)
        try:
            # (not wait_for: in 3.11 it can swallow a cancellation that comes with a message)
            async with asyncio.timeout(None) as quiet_for:
                while len(found) < MAX_SCAN:
                    quiet_for.reschedule(min(loop.time() + quiet, end))
                    m = await anext(messages)
                    if m.retain and isinstance(m.payload, bytes) and m.payload:
                        # a JPEG's bytes are not needed, only that it is there
                        snap = m.topic.value.endswith("/snapshot")
                        found[m.topic.value] = b"jpeg" if snap else m.payload
        except TimeoutError:
            pass
        done.set()
        await asyncio.Event().wait()  # until the caller, woken by done, cancels us

    runner = asyncio.create_task(
        reconnect_forever(
            cfg,
            session,
            client_id=client_id,
            what=f"mqtt scan {client_id}",
            max_incoming=MAX_SCAN,
        )
    )
    try:
        await done.wait()
    finally:
        await _stop(runner)
    return dict(found)


async def _stop(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait for it, 3 s at most, cancelling again if a cancellation
    was lost (as aiomqtt's own ``asyncio.wait_for`` lost them on 3.11, before
    :class:`streamer.mqttconn.Client`)."""
    for _ in range(3):
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=1.0)
        if done:
            return
    log.warning("%s did not stop when cancelled; left behind", task.get_name())


class Announcer:
    """Scan, clear what removed streams left, then publish discovery (see the module)."""

    def __init__(
        self,
        cfg: MqttConfig,
        topics: Topics,
        publisher: MqttPublisher,
        streams: Iterable[str],
        *,
        client_id: str,
        event_labels: Sequence[str] = (),
        snapshot_streams: Sequence[str] = (),
    ) -> None:
        self.cfg = cfg
        self.snapshot_streams = list(snapshot_streams)
        self.topics = topics
        self.publisher = publisher
        self.streams = list(streams)
        self.client_id = client_id
        self.event_labels = list(event_labels)
        self.cleared = 0
        self.done = asyncio.Event()  # the scan and the clearing are over
        self._discovered = False

    async def run(self) -> None:
        found = await scan_retained(self.cfg, self.topics, client_id=self.client_id)
        stale = stale_topics(
            self.topics, self.streams, found, self.event_labels, self.snapshot_streams
        )
        for topic in stale[:MAX_CLEAR]:
            self.publisher.enqueue(topic, b"", 1, retain=True)
        self.cleared = min(len(stale), MAX_CLEAR)
        if stale:
            log.info(
                "cleared %d retained topics left by streams no longer configured or by "
                "0.1.0 discovery%s", self.cleared,
                f" ({len(stale) - MAX_CLEAR} more at the next start)" if len(stale) > MAX_CLEAR
                else "",
            )  # fmt: skip
        self.discover()
        self.done.set()

    def discover(self) -> None:
        """Queue every configured stream's discovery config, once."""
        if self._discovered or self.topics.discovery_prefix is None:
            return
        self._discovered = True
        for s in self.streams:
            config = ha_label_config(self.topics, self.topics.node, s)
            self.publisher.set_retained(self.topics.ha_discovery(s), json.dumps(config))
            for label in self.event_labels:
                ev = ha_event_config(self.topics, self.topics.node, s, label)
                self.publisher.set_retained(
                    self.topics.ha_event_discovery(s, label), json.dumps(ev)
                )
        for s in self.snapshot_streams:
            image = ha_image_config(self.topics, self.topics.node, s)
            self.publisher.set_retained(self.topics.ha_image_discovery(s), json.dumps(image))
        for s in self.streams:
            switch = ha_switch_config(self.topics, self.topics.node, s)
            self.publisher.set_retained(self.topics.ha_switch_discovery(s), json.dumps(switch))


@contextlib.asynccontextmanager
async def announced(
    cfg: MqttConfig,
    topics: Topics,
    publisher: MqttPublisher,
    streams: Iterable[str],
    *,
    client_id: str,
    event_labels: Sequence[str] = (),
    snapshot_streams: Sequence[str] = (),
) -> AsyncIterator[Announcer]:
    """Run an :class:`Announcer` beside the block; on the way out, stop it and make sure
    the discovery configs are queued."""
    a = Announcer(cfg, topics, publisher, streams, client_id=client_id,
                  event_labels=event_labels, snapshot_streams=snapshot_streams)  # fmt: skip
    task = asyncio.create_task(a.run(), name="announce")
    try:
        yield a
    finally:
        await _stop(task)
        if task.done() and not task.cancelled() and (e := task.exception()) is not None:
            log.error("clearing stale retained topics failed: %s: %s", type(e).__name__, e)
        a.discover()


async def run_available(publisher: MqttPublisher, topics: Topics, stream: str,
                           run: Awaitable[None]) -> None:  # fmt: skip
    """``P/N/S/available``: ``online`` while ``run`` runs, ``stopped`` once it ended or
    was cancelled (the node stops). A killed node leaves ``online`` beside its own
    ``offline`` Will; Home Assistant needs both online."""
    publisher.set_retained(topics.stream_available(stream), ONLINE)
    try:
        await run
    finally:
        publisher.set_retained(topics.stream_available(stream), STOPPED)


def streams_offline(publisher: MqttPublisher, topics: Topics, streams: Iterable[str]) -> None:
    """``offline`` for streams whose process died (the ``--workers`` supervisor)."""
    for s in streams:
        publisher.enqueue(topics.stream_available(s), OFFLINE, 1, retain=True)
