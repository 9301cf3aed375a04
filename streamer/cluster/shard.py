"""Shard actors: a :class:`~streamer.app.node.Node` over a few of the config's streams.

Each shard runs its streams as a node does (sources, capture processes, aligner,
predictions, events, the outbox and its spool, stats), under the node id of the config
and without an ``available`` of its own (the controller owns it), with inference in its
runner actor (:class:`~streamer.cluster.runner.RemoteFusion`). Its stats carry the shard's
index, its Ray node id and host label. Ray restarts a shard whose node died (from its
constructor: its state is gone), as a new ``run``; the controller announces the gap.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any

from streamer.cluster.plan import ShardPlan
from streamer.cluster.settings import HOST_LABEL
from streamer.config import Config

log = logging.getLogger(__name__)


def actor_logging(level: str) -> None:
    """The streamer log lines of an actor, to its stderr (which Ray passes to the driver)."""
    root = logging.getLogger("streamer")
    root.setLevel(getattr(logging, level.upper()))
    if not any(getattr(h, "_streamer", False) for h in root.handlers):
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        h._streamer = True  # type: ignore[attr-defined]
        root.addHandler(h)
        root.propagate = False


def die_with_raylet(what: str, period: float = 0.25) -> None:
    """Exit this actor's process as soon as its raylet (its parent) is gone.

    A raylet that dies (SIGKILLed, or shut down once the head declared its node dead)
    leaves its workers running: a shard would go on publishing beside the copy Ray has
    restarted elsewhere, two runs of one stream at once. A thread polls the parent pid
    and ends the process at once (what the outbox held is lost, as on a dead machine;
    the gap marker counts it)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(period)
        log.error("%s: its Ray node's raylet is gone; exiting", what)
        os._exit(70)

    threading.Thread(target=watch, name="raylet-watch", daemon=True).start()


def shard_config(cfg: Config, plan: ShardPlan) -> Config:
    """The config of one shard: its streams; a spool and an event history of its own (a
    directory each, as ``--workers`` gives each worker); no HTTP server."""
    mine = set(plan.streams)
    mqtt = cfg.mqtt
    if mqtt.outbox_dir is not None:
        mqtt = mqtt.model_copy(update={"outbox_dir": mqtt.outbox_dir / plan.name})
    history = cfg.history
    if history.dir is not None:
        history = history.model_copy(update={"dir": history.dir / plan.name})
    return cfg.model_copy(
        update={
            "streams": [s for s in cfg.streams if s.id in mine],
            "mqtt": mqtt,
            "history": history,
            "http": None,
        }
    )


class ShardActor:
    def __init__(self, cfg: Config, plan: ShardPlan, runner: Any) -> None:
        import ray

        from streamer.app.node import Node
        from streamer.cluster.runner import RemoteFusion
        from streamer.malloc import limit_malloc_arenas

        actor_logging(cfg.log_level)
        die_with_raylet(plan.name)
        limit_malloc_arenas()
        ctx = ray.get_runtime_context()
        self.plan = plan
        self.node_id = ctx.get_node_id()
        host = ctx.get_node_labels().get(HOST_LABEL)
        self.host = host[0] if isinstance(host, list) and host else host
        self.node = Node(
            shard_config(cfg, plan),
            worker=plan.index,
            fusion=lambda: RemoteFusion(runner),
            placement={"shard": plan.index, "ray_node": self.node_id, "host": self.host},
        )
        log.info("%s: streams %s on node %s (host %s), run %s", plan.name, ",".join(plan.streams),
                 self.node_id[:12], self.host, self.node.run_id)  # fmt: skip

    async def run(self) -> int:
        """The shard's streams until they end or :meth:`stop`: the node's exit code."""
        return await self.node.run()

    async def stop(self) -> None:
        self.node.stop()

    async def info(self) -> dict[str, Any]:
        return {
            "shard": self.plan.index,
            "streams": list(self.plan.streams),
            "run": self.node.run_id,
            "node_id": self.node_id,
            "host": self.host,
            "pinned": self.plan.host,
        }

    async def stats(self) -> dict[str, Any]:
        return self.node.snapshot()
