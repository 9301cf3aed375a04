"""``streamer run --workers N``: the streams split over N processes, one node.

Each worker is ``streamer run CONFIG --worker I/N``: its own event loop, model and MQTT
connections, the streams ``streams[I::N]``, publishing under the same node id. The
supervisor (this process) owns the node's ``available`` topic (``online``, ``stopped``,
and ``offline`` as its Last Will), starts the embedded broker when the config asks for
one, publishes the Home Assistant discovery of every stream (and clears what removed
streams left retained, :mod:`streamer.sinks.announce`), marks a dead worker's streams
``offline`` on ``P/N/S/available``, gives each worker its own spool directory (each
runs ``model.threads`` model threads) and its own event history
directory (``history.dir/worker<I>``: each worker tracks its own streams' events; the
history is not served, since http runs in one process only), restarts a worker that
dies (jittered backoff; not one that exits 2, a config error) and, on SIGINT/SIGTERM,
stops them all and waits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from streamer.backoff import Backoff
from streamer.config import Config
from streamer.errors import ConfigError
from streamer.events.setup import supervisor_event_labels
from streamer.sinks.announce import announced, streams_offline
from streamer.sinks.broker import broker_for
from streamer.sinks.mqtt import MqttPublisher
from streamer.sinks.topics import Topics
from streamer.snapshots.snapshots import snapshot_streams

log = logging.getLogger(__name__)


def parse_worker(value: str) -> tuple[int, int]:
    """``I/N`` -> (I, N) with 0 <= I < N."""
    i, sep, n = value.partition("/")
    if not sep or not i.isdigit() or not n.isdigit() or not 0 <= int(i) < int(n):
        raise ConfigError("--worker", f"expected I/N with 0 <= I < N, got {value!r}")
    return int(i), int(n)


def share(cfg: Config, index: int, count: int) -> Config:
    """The config of worker ``index`` of ``count``: every ``count``-th stream."""
    return cfg.model_copy(update={"streams": cfg.streams[index::count]})


class Supervisor:
    def __init__(self, cfg: Config, config_path: str, overrides: list[str], workers: int):
        if cfg.http is not None:
            raise ConfigError("--workers", "http (WebRTC, /metrics) runs in one process only")
        self.cfg = cfg
        self.config_path = config_path
        self.overrides = overrides
        self.count = min(workers, len(cfg.streams))
        self._stop = asyncio.Event()
        self.restarts = 0

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        async with broker_for(self.cfg.mqtt) as mqtt:
            url = mqtt.url
            topics = Topics(mqtt.prefix, self.cfg.node, mqtt.discovery_prefix)
            cid = f"streamer-{self.cfg.node}-supervisor-{os.getpid()}"
            ids = [s.id for s in self.cfg.streams]
            labels = supervisor_event_labels(self.cfg)
            snapping = snapshot_streams(  # (--workers refuses http:)
                self.cfg.snapshots, {s.id: s.video is not None for s in self.cfg.streams},
                events=self.cfg.events is not None, http=False,
            )  # fmt: skip
            async with (
                MqttPublisher(mqtt, topics, client_id=cid, close_timeout=5.0) as pub,
                announced(mqtt, topics, pub, ids, client_id=f"{cid}-scan", event_labels=labels,
                          snapshot_streams=snapping),  # fmt: skip
            ):
                codes = await asyncio.gather(
                    *(self._keep(i, url, pub, topics) for i in range(self.count))
                )  # fmt: skip
        return 0 if all(c == 0 for c in codes) else 1

    def _args(self, index: int, url: str) -> list[str]:
        sets = list(self.overrides)
        if self.cfg.mqtt.embedded:
            sets.append(f"mqtt.url={url}")
        if self.cfg.mqtt.outbox_dir is not None:  # one spool (and its lock) per worker
            sets.append(f"mqtt.outbox_dir={self.cfg.mqtt.outbox_dir / f'worker{index}'}")
        if self.cfg.history.dir is not None:  # one event history (and its lock) per worker
            sets.append(f"history.dir={self.cfg.history.dir / f'worker{index}'}")
        level = logging.getLevelName(logging.getLogger().level).lower()
        return [
            sys.executable, "-m", "streamer", "--log-level", level, "run", self.config_path,
            *(x for s in sets for x in ("--set", s)), "--worker", f"{index}/{self.count}",
        ]  # fmt: skip

    async def _keep(self, index: int, url: str, pub: MqttPublisher, topics: Topics) -> int:
        """Run worker ``index`` until it ends cleanly or we stop; restart it if it dies."""
        mine = [s.id for s in share(self.cfg, index, self.count).streams]
        backoff = Backoff(base=0.5, cap=10.0)
        while True:
            proc = await asyncio.create_subprocess_exec(*self._args(index, url))
            log.info("worker %d/%d started (pid %d)", index, self.count, proc.pid)
            stop = asyncio.create_task(self._stop.wait())
            done = asyncio.create_task(proc.wait())
            await asyncio.wait({stop, done}, return_when=asyncio.FIRST_COMPLETED)
            if not done.done():  # stopping: pass the signal on, wait for its drain
                proc.send_signal(signal.SIGTERM)
                limit = self.cfg.shutdown_timeout + 30.0
                try:
                    async with asyncio.timeout(limit):
                        await asyncio.shield(done)
                except TimeoutError:
                    log.error("worker %d did not stop within %.0f s: killed", index, limit)
                    proc.kill()
                    await done
            stop.cancel()
            rc = done.result()
            if self._stop.is_set() and rc == -signal.SIGTERM:
                # our stop reached it before it was up (signal handlers are installed
                # once its model is loaded): it had published nothing, it lost nothing
                log.info("worker %d/%d stopped while starting", index, self.count)
                return 0
            if rc != 0:  # it said nothing more about its streams: it had no Will of its own
                streams_offline(pub, topics, mine)
            if self._stop.is_set() or rc == 0:
                log.info("worker %d/%d exited %d", index, self.count, rc)
                return rc
            if rc == 2:  # a bad config or argument (its one line is above): no healing
                log.error("worker %d/%d cannot start (exit 2); not restarted", index, self.count)
                return rc
            self.restarts += 1
            delay = backoff.next_delay()
            log.error("worker %d/%d died (exit %d); restarting in %.1f s", index, self.count,
                      rc, delay)  # fmt: skip
            try:
                async with asyncio.timeout(delay):
                    await self._stop.wait()
                return rc  # asked to stop while waiting to restart
            except TimeoutError:
                pass
