"""The controller: ``streamer run CONFIG --engine ray [--address ADDR]``.

It runs where it is started (the driver of a Ray job) and:

- connects to the cluster (``--address``, else ``RAY_ADDRESS``, else a Ray of its own on
  this machine), with Ray's token authentication on unless ``RAY_AUTH_MODE`` says
  otherwise;
- starts ``ray.runners`` runner actors and one shard actor per planned shard
  (:mod:`~streamer.cluster.plan`): a pinned shard asks for its host's label and waits for
  it; the others are spread and move when their node dies (Ray restarts them);
- owns the node's ``available`` (``online``; ``stopped`` on a clean exit; ``offline`` as
  its Last Will), the Home Assistant discovery, ``P/N/shards`` (retained: which shard
  runs which streams on which Ray node, under which run) and, when a shard is lost,
  ``offline`` on its streams' ``available``;
- reads the predictions and publishes a gap marker (:mod:`~streamer.cluster.gaps`) for
  each stream that comes back under a new run;
- serves ``/metrics`` when the config has ``http:``.

On SIGINT/SIGTERM it stops every shard (each drains its windows and outbox, as a node
does) and waits for them. Its exit code is 1 when a shard lost what it had promised to
keep, else 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt

from streamer.cluster.gaps import GapTracker
from streamer.cluster.plan import ShardPlan, check_cluster_config, plan_shards
from streamer.cluster.settings import HOST_LABEL, LABEL_VALUE_RE
from streamer.config import Config
from streamer.errors import StreamerError
from streamer.events.setup import supervisor_event_labels
from streamer.mqttconn import Reconnecting
from streamer.sinks.announce import announced, streams_offline
from streamer.sinks.mqtt import MqttPublisher
from streamer.sinks.topics import Topics
from streamer.snapshots.snapshots import snapshot_streams

log = logging.getLogger(__name__)

ENDED = ("ended", "stopped")  # a shard's run returned: its sources ended, or we stopped it
UNPLACED_S = 30.0  # a shard not running after this long is worth a warning


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise StreamerError(
            "--engine ray needs Ray: pip install 'streamer[ray]' (on every node, the same "
            "Ray and Python versions)"
        ) from None
    return ray


class Controller:
    def __init__(self, cfg: Config, *, address: str | None = None) -> None:
        check_cluster_config(cfg)
        self.cfg = cfg
        self.address = address
        self.plans = plan_shards(cfg)
        self.topics = Topics(cfg.mqtt.prefix, cfg.node, cfg.mqtt.discovery_prefix)
        self.gaps = GapTracker(cfg.node, cfg.window.hop)
        self.shards: dict[int, dict[str, Any]] = {}  # the latest info of each shard
        self.stats: dict[int, dict[str, Any]] = {}  # the latest stats of each shard
        self.failovers = 0
        self._stop = asyncio.Event()
        self._pub: MqttPublisher | None = None
        self._handles: list[Any] = []
        self._runners: list[Any] = []

    def stop(self) -> None:
        self._stop.set()

    # -- the cluster ---------------------------------------------------------------------
    def _connect(self) -> None:
        mode = os.environ.setdefault("RAY_AUTH_MODE", "token")  # before Ray reads it, once
        ray = import_ray()
        if mode != "token":
            log.warning("Ray token authentication is off (RAY_AUTH_MODE=%s): anyone who "
                        "reaches the cluster can run code on it", mode)  # fmt: skip
        address = self.address or os.environ.get("RAY_ADDRESS")
        kwargs: dict[str, Any] = {"namespace": f"streamer-{self.cfg.node}",
                                  "logging_level": logging.WARNING}  # fmt: skip
        if address is None:  # a Ray of our own: this machine, labelled with its host name,
            # with a logical CPU for every actor (a shard is mostly waiting on its sources)
            host = socket.gethostname().split(".")[0]
            labels = {HOST_LABEL: host} if LABEL_VALUE_RE.match(host) else {}
            rc = self.cfg.ray
            need = len(self.plans) * rc.shard_cpus + rc.runners * rc.runner_cpus
            cpus = max(os.cpu_count() or 1, math.ceil(need))
            kwargs |= {"include_dashboard": False, "labels": labels, "num_cpus": cpus}
        ray.init(address=address, **kwargs)
        log.info("connected to Ray at %s: %d nodes", address or "a local cluster",
                 len([n for n in ray.nodes() if n["Alive"]]))  # fmt: skip

    def _start_actors(self) -> None:
        ray = import_ray()
        from streamer.cluster.runner import RunnerActor
        from streamer.cluster.shard import ShardActor

        rc = self.cfg.ray
        runner_cls = ray.remote(RunnerActor)
        shard_cls = ray.remote(ShardActor)
        for i in range(rc.runners):
            opts: dict[str, Any] = {
                "max_restarts": -1, "max_task_retries": 0,
                "num_cpus": rc.runner_cpus, "num_gpus": rc.runner_gpus,
            }  # fmt: skip
            if rc.runner_host is not None:
                opts["label_selector"] = {HOST_LABEL: rc.runner_host}
            else:  # one per node while there are nodes (one per GPU with runner_gpus: 1)
                opts["scheduling_strategy"] = "SPREAD"
            self._runners.append(runner_cls.options(**opts).remote(self.cfg, i))
        for p in self.plans:
            opts = {"max_restarts": -1, "max_task_retries": 0, "num_cpus": rc.shard_cpus}
            if p.host is not None:  # waits for its host; never placed elsewhere
                opts["label_selector"] = {HOST_LABEL: p.host}
            else:
                opts["scheduling_strategy"] = "SPREAD"
            runner = self._runners[p.index % len(self._runners)]
            self._handles.append(shard_cls.options(**opts).remote(self.cfg, p, runner))
            self.shards[p.index] = {"shard": p.index, "streams": list(p.streams),
                                    "pinned": p.host, "state": "starting"}  # fmt: skip

    def _shutdown(self) -> None:
        ray = import_ray()
        for a in (*self._handles, *self._runners):
            with contextlib.suppress(Exception):
                ray.kill(a)
        ray.shutdown()

    # -- run -----------------------------------------------------------------------------
    async def run(self) -> int:
        await asyncio.to_thread(self._connect)
        try:
            return await self._run()
        finally:
            await asyncio.to_thread(self._shutdown)

    async def _run(self) -> int:
        cfg, topics = self.cfg, self.topics
        cid = f"streamer-{cfg.node}-controller-{os.getpid()}"
        ids = [s.id for s in cfg.streams]
        snapping = snapshot_streams(
            cfg.snapshots, {s.id: s.video is not None for s in cfg.streams},
            events=cfg.events is not None, http=False,
        )  # fmt: skip
        async with (
            MqttPublisher(cfg.mqtt, topics, client_id=cid, close_timeout=5.0) as pub,
            announced(cfg.mqtt, topics, pub, ids, client_id=f"{cid}-scan",
                      event_labels=supervisor_event_labels(cfg), snapshot_streams=snapping),
            Reconnecting(cfg.mqtt, self._watch, client_id=f"{cid}-watch", what="prediction watch"),
            self._web(),
        ):  # fmt: skip
            self._pub = pub
            self._start_actors()
            self._publish_shards()
            async with asyncio.TaskGroup() as tg:
                keeps = [tg.create_task(self._keep(p, h), name=f"keep-{p.name}")
                         for p, h in zip(self.plans, self._handles, strict=True)]  # fmt: skip
                checks = [tg.create_task(self._check(p, h), name=f"check-{p.name}")
                          for p, h in zip(self.plans, self._handles, strict=True)]  # fmt: skip
                stop = tg.create_task(self._stop.wait(), name="stop-signal")
                await asyncio.wait([stop, *keeps], return_when=asyncio.FIRST_COMPLETED)
                while not stop.done() and not all(k.done() for k in keeps):
                    await asyncio.wait([stop, *keeps], return_when=asyncio.FIRST_COMPLETED)
                if stop.done():
                    await self._stop_shards(keeps)
                for t in (stop, *checks):
                    t.cancel()
            codes = [k.result() for k in keeps]
            self._publish_shards()
        return 0 if all(c == 0 for c in codes) else 1

    async def _stop_shards(self, keeps: list[asyncio.Task[int]]) -> None:
        log.info("stopping %d shards", len(self._handles))
        for h in self._handles:
            h.stop.remote()
        limit = self.cfg.shutdown_timeout + 30.0
        done, pending = await asyncio.wait(keeps, timeout=limit)
        for k in pending:
            log.error("a shard did not stop within %.0f s", limit)
            k.cancel()

    async def _keep(self, plan: ShardPlan, handle: Any) -> int:
        """The shard's ``run`` until it returns; a lost shard (its node died) is restarted
        by Ray, and its ``run`` called again once it is back."""
        ray = import_ray()
        while True:
            called_on = self.shards[plan.index].get("run")  # the run this call reaches
            try:
                rc: int = await handle.run.remote()
                self.shards[plan.index]["state"] = "stopped" if self._stop.is_set() else "ended"
                return rc
            except ray.exceptions.RayActorError as e:
                if self._stop.is_set():
                    return 0
                info = self.shards[plan.index]
                # a loss of the run last seen running, said once; a call that reached a
                # copy already gone (made while Ray restarted it) is simply made again
                if info["state"] == "running" and info.get("run") == called_on or \
                        info["state"] == "starting":  # fmt: skip
                    self.failovers += 1
                    info["state"] = "lost"
                    assert self._pub is not None
                    streams_offline(self._pub, self.topics, plan.streams)
                    self._publish_shards()
                    log.warning("%s lost (%s on node %s); %s", plan.name, type(e).__name__,
                                str(info.get("node_id", "?"))[:12],
                                f"waiting for host {plan.host}" if plan.host else
                                "Ray restarts it elsewhere")  # fmt: skip
                await asyncio.sleep(self.cfg.ray.check_interval)

    async def _check(self, plan: ShardPlan, handle: Any) -> None:
        """The shard's placement and run, every ``ray.check_interval``, ``P/N/shards`` when
        it changed, and its stats for ``/metrics``. One call at a time: a shard waiting
        for its host holds one call, not one per interval."""
        ray = import_ray()
        while self.shards[plan.index]["state"] not in ENDED:
            waited = asyncio.create_task(self._say_unplaced(plan))
            try:
                info = await handle.info.remote()
                if self.cfg.http is not None:
                    self.stats[plan.index] = await handle.stats.remote()
            except ray.exceptions.RayActorError:
                await asyncio.sleep(self.cfg.ray.check_interval)
                continue  # lost: _keep says it
            finally:
                waited.cancel()
            prev = self.shards[plan.index]
            if prev["state"] in ENDED:
                return
            if prev.get("run") != info["run"] or prev["state"] != "running":
                if prev.get("run") is not None and prev["run"] != info["run"]:
                    log.info("%s back on node %s (host %s), run %s", plan.name,
                             info["node_id"][:12], info["host"], info["run"])  # fmt: skip
                else:
                    log.info("%s running on node %s (host %s), run %s", plan.name,
                             info["node_id"][:12], info["host"], info["run"])  # fmt: skip
                self.shards[plan.index] = {**info, "state": "running"}
                self._publish_shards()
            await asyncio.sleep(self.cfg.ray.check_interval)

    async def _say_unplaced(self, plan: ShardPlan) -> None:
        """A warning, once, for a shard that Ray has not placed within ``UNPLACED_S``."""
        t0 = time.monotonic()
        await asyncio.sleep(UNPLACED_S)
        if self.shards[plan.index].get("state") != "running":
            rc = self.cfg.ray
            why = (f"no live Ray node labelled {HOST_LABEL}={plan.host}" if plan.host else
                   f"no Ray node with {rc.shard_cpus:g} free CPU (ray.shard_cpus)")  # fmt: skip
            log.warning("%s (streams %s) not running after %.0f s: %s?", plan.name,
                        ",".join(plan.streams), time.monotonic() - t0, why)  # fmt: skip

    def _publish_shards(self) -> None:
        if self._pub is None:
            return
        body = {"node": self.cfg.node, "failovers": self.failovers,
                "shards": [self.shards[p.index] for p in self.plans]}  # fmt: skip
        self._pub.set_retained(self.topics.shards, json.dumps(body), coalesce=True)

    # -- the predictions, as a subscriber sees them --------------------------------------
    async def _watch(self, client: aiomqtt.Client) -> None:
        await client.subscribe(self.topics.prediction("+"), qos=1)
        async for m in client.messages:
            marker = self.gaps.observe(m.payload if isinstance(m.payload, bytes) else b"")
            if marker is not None and self._pub is not None:
                log.warning("stream %s: back under run %s; %d windows not produced (%.1f-%.1f)",
                            marker["stream"], marker["run"], marker["windows"],
                            marker["from"], marker["to"])  # fmt: skip
                self._pub.enqueue(self.topics.gap(marker["stream"]), json.dumps(marker), 1)

    @contextlib.asynccontextmanager
    async def _web(self) -> AsyncIterator[None]:
        if self.cfg.http is None:
            yield
            return
        from streamer.cluster.metrics import ControllerWeb

        web = ControllerWeb(self, self.cfg.http)
        await web.start()
        try:
            yield
        finally:
            await web.stop()
