"""A running node's control topics: one MQTT connection per node process.

It subscribes ``P/N/set/model`` (:class:`~streamer.app.control.ModelSwitch`) and, for
each stream this process runs (a ``--workers`` worker: its own), ``P/N/S/set/enabled``
and ``P/N/S/set/events``::

    P/N/S/set/enabled   ON | OFF (any case): resume | pause the stream; retained echo
                        P/N/S/enabled ON | OFF, at every change and every (re)connect
    P/N/S/set/events    JSON {"label": L, "on", "off", "min_windows", "cooldown_s"}, any
                        of the four (label absent or "*": the defaults of every label);
                        retained echo P/N/S/thresholds, the stream's thresholds as JSON

A paused stream closes its sources (their ``status/M`` go ``offline``), hands over the
windows its aligner held, ends its open events (reason ``disabled``) and stays
``available`` ``online``. Before the streams start the node waits (up to
``START_WAIT_S``) until the broker has delivered what is retained on these topics, so a
retained ``OFF`` keeps a stream paused across restarts from its first instant: the
connection subscribes, then publishes a marker to a topic of its own
(``P/N/_sync/<client id>``) and takes the retained messages as delivered when the marker
comes back (the broker sends them in order). A payload that is not valid changes
nothing: counted (stats ``control``) and logged in one line (an invalid ``set/enabled``
once per stream). A model loads in a task of its own, so ``set/enabled`` and
``set/events`` are not held up by it; a ``set/model`` still waiting behind a load is
replaced by a newer one (``model_replaced``). Whoever may publish to ``set/`` controls
the node: the broker's ACL decides (README, ``configs/mosquitto-acl.conf``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from typing import Any, Self

import aiomqtt
from pydantic import ValidationError

from streamer.app.control import ModelSwitch
from streamer.app.stream import StreamPipeline
from streamer.config import Config
from streamer.events.settings import LabelOverride
from streamer.events.tracker import EventTracker
from streamer.mqttconn import Reconnecting
from streamer.sinks.topics import Topics, label_slug

log = logging.getLogger(__name__)

MAX_PAYLOAD = 4096
START_WAIT_S = 3.0  # how long the streams wait for the retained control state at start


def thresholds_json(tracker: EventTracker, stream: str) -> dict[str, Any]:
    """The ``P/N/S/thresholds`` echo: the stream's defaults and its labels' overrides,
    each resolved (all four values)."""
    cfg = tracker.config_of(stream)
    th = cfg.thresholds("", LabelOverride())  # no override: the defaults
    return {
        **th.model_dump(),
        "overrides": {k: cfg.thresholds(k).model_dump() for k in sorted(cfg.overrides)},
    }


class NodeControl:
    """The subscriptions to the node's ``set/`` topics and the retained echoes."""

    def __init__(
        self,
        cfg: Config,
        switch: ModelSwitch,
        streams: dict[str, StreamPipeline],
        tracker: EventTracker | None,
        *,
        client_id: str,
    ) -> None:
        self.topics = Topics(cfg.mqtt.prefix, cfg.node)
        base = self.topics.base
        self.topic = f"{base}/set/model"
        self.switch = switch
        self.streams = streams
        self.tracker = tracker
        self._base = base
        self._sync = f"{base}/_sync/{label_slug(client_id)}"
        self._conn = Reconnecting(
            cfg.mqtt, self._session, client_id=client_id, what=f"control {client_id}"
        )
        self.subscribed = asyncio.Event()
        self.ready = asyncio.Event()  # the retained control state has been applied
        self.counts: Counter[str] = Counter()
        self._warned: set[str] = set()  # streams whose invalid set/enabled was logged
        # set/model loads off this loop's receive path, so set/enabled and set/events are
        # not held up by a load: one task, and the newest request waiting (the last wins)
        self._model_task: asyncio.Task[None] | None = None
        self._model_wanted: bytes | None = None

    async def __aenter__(self) -> Self:
        await self._conn.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._conn.__aexit__(*exc)
        task, self._model_task = self._model_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def counters(self) -> dict[str, int]:
        return dict(self.counts)

    async def wait_ready(self, within_s: float = START_WAIT_S) -> bool:
        """Until the retained control state is applied (False: the broker did not answer
        ``within_s``; the streams start enabled and follow it once it comes)."""
        try:
            async with asyncio.timeout(within_s):
                await self.ready.wait()
        except TimeoutError:
            log.warning("control: no answer from the broker in %.0f s; streams start enabled",
                        within_s)  # fmt: skip
            return False
        return True

    async def _session(self, client: aiomqtt.Client) -> None:
        topics = [self.topic] + [
            self.topics.set(s, what) for s in self.streams for what in ("enabled", "events")
        ]
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._receive(client), name="control-receive")
                await client.subscribe([(t, 1) for t in topics])
                self.subscribed.set()
                await client.subscribe(self._sync, qos=1)
                await client.publish(self._sync, b"", qos=1)  # comes back after the retained
        finally:
            self.subscribed.clear()

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:  # raises MqttError when disconnected
            payload = message.payload
            data = payload if isinstance(payload, bytes) else str(payload or "").encode()
            topic = message.topic.value
            if topic == self.topic:
                self._model(data)
            elif topic == self._sync:
                for sid in self.streams:
                    await self._echo(client, sid)
                self.ready.set()
            else:
                sid, _, what = topic.removeprefix(self._base + "/").partition("/set/")
                if sid not in self.streams:
                    continue
                if what == "enabled":
                    await self._enabled(client, sid, data)
                elif what == "events":
                    await self._events(client, sid, data)

    def _model(self, data: bytes) -> None:
        """A ``set/model`` request: loaded by the one model task; a request still waiting
        behind a load is replaced by a newer one (counted)."""
        if self._model_wanted is not None:
            self.counts["model_replaced"] += 1
        self._model_wanted = data
        if self._model_task is None or self._model_task.done():
            self._model_task = asyncio.create_task(self._switch_models(), name="model-switch")

    async def _switch_models(self) -> None:
        while self._model_wanted is not None:
            data, self._model_wanted = self._model_wanted, None
            await self.switch.request(data)

    async def _echo(self, client: aiomqtt.Client, sid: str) -> None:
        on = self.streams[sid].enabled
        await client.publish(self.topics.enabled(sid), b"ON" if on else b"OFF", 1, True)
        if self.tracker is not None:
            body = json.dumps(thresholds_json(self.tracker, sid), separators=(",", ":"))
            await client.publish(self.topics.thresholds(sid), body, 1, True)

    async def _enabled(self, client: aiomqtt.Client, sid: str, data: bytes) -> None:
        text = data[:16].decode("utf-8", "replace").strip().upper() if len(data) <= 16 else ""
        if text not in ("ON", "OFF"):
            self.counts["enabled_invalid"] += 1
            if sid not in self._warned:
                self._warned.add(sid)
                log.warning("stream %s: set/enabled %r is neither ON nor OFF; ignored (and "
                            "the next ones, counted in stats)", sid, data[:32])  # fmt: skip
            return
        w = self.streams[sid]
        on = text == "ON"
        if on != w.enabled:
            self.counts["enabled_changes"] += 1
            if on and self.tracker is not None:
                self.tracker.resume(sid)
            await w.set_enabled(on)
            if not on and self.tracker is not None:
                self.tracker.pause(sid)  # after the flush: its windows are not tracked
            log.info("stream %s: %s", sid, "resumed (set/enabled ON)" if on else
                     "paused (set/enabled OFF): sources closed")  # fmt: skip
        if self.ready.is_set():  # else the marker's echo follows
            await self._echo(client, sid)

    async def _events(self, client: aiomqtt.Client, sid: str, data: bytes) -> None:
        try:
            if self.tracker is None:
                raise ValueError("the config has no events: section")
            label, change = parse_thresholds(data)
            self.tracker.configure(sid, label, change)
        except ValueError as e:  # pydantic's ValidationError is one
            self.counts["events_refused"] += 1
            why = _one_line(e)
            log.error("stream %s: set/events refused: %s", sid, why)
            return
        self.counts["events_changes"] += 1
        log.info("stream %s: thresholds of %s now %s", sid, label or "every label",
                 change.model_dump(exclude_none=True))  # fmt: skip
        if self.ready.is_set():
            await self._echo(client, sid)


def parse_thresholds(data: bytes) -> tuple[str | None, LabelOverride]:
    """A ``set/events`` payload: (the label, None for the defaults; the change)."""
    if len(data) > MAX_PAYLOAD:
        raise ValueError(f"{len(data)} bytes (at most {MAX_PAYLOAD})")
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"not JSON: {e}") from None
    if not isinstance(body, dict):
        raise ValueError("not a JSON object")
    label = body.pop("label", None)
    if label is not None and (not isinstance(label, str) or not label.strip()):
        raise ValueError(f"label: {label!r} is not a label's name")
    change = LabelOverride.model_validate(body)
    if not change.model_dump(exclude_none=True):
        raise ValueError("names none of on, off, min_windows, cooldown_s")
    return (None if label == "*" else label), change


def _one_line(e: ValueError) -> str:
    if isinstance(e, ValidationError):
        return "; ".join(
            f"{'.'.join(str(x) for x in err['loc']) or 'payload'}: {err['msg']}"
            for err in e.errors()
        )
    return str(e)
