"""Runner actors: the model, batching the windows of every shard that calls it.

A shard's :class:`~streamer.inference.runner.InferenceRunner` batches its own windows as
on a plain node, but its fusion is a :class:`RemoteFusion`: the batch's model inputs
(:class:`~models.incremental.WindowInputs`: frames at the model's size, audio segments,
text, keyed by absolute time; never source-size frames) go to the shard's runner, whose
batcher joins the calls of every shard into model batches of up to ``model.max_batch``
windows, waiting at most ``model.max_wait_ms`` for more. A shard keeps its runner for its
life, so each stream's encoder cache stays warm there.

A merged batch that fails fails each call in it; each shard's runner then infers its
windows one by one, so only a window that fails by itself is lost (as on a plain node).
A runner that is gone (its node died) fails the calls until Ray has restarted it; those
windows are counted ``inference_error`` and show as gaps in ``seq``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from models.incremental import WindowInputs
from streamer.cluster.wire import Answer, Stripper, Tags, infer_named
from streamer.config import Config
from streamer.queues import fill_batch

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 30.0  # a runner that answers nothing for this long fails the batch


class RemoteFusion:
    """The fusion a shard's inference thread calls: the work is done by a runner actor.

    ``infer`` blocks its caller, the runner's inference thread, never the event loop.
    Items go over the wire once (:mod:`streamer.cluster.wire`); windows the runner could
    not resolve are sent again whole."""

    def __init__(self, runner: Any, call: Callable[[list[WindowInputs]], Answer] | None = None):
        """``runner``: a Ray actor handle of :class:`RunnerActor`; ``call``: how a batch
        reaches it (a test's runner in-process)."""
        self.runner = runner
        self._call = call or self._remote
        self.wire = Stripper()
        self.resent = 0  # windows sent again whole

    def _remote(self, windows: list[WindowInputs]) -> Answer:
        # the call's future, not ray.get (which Ray flags inside an async actor even from
        # another thread)
        answer: Answer = self.runner.infer.remote(windows).future().result(CALL_TIMEOUT_S)
        return answer

    def infer(self, windows: Sequence[WindowInputs]) -> tuple[torch.Tensor, Tags]:
        probs, tags, missing = self._call([self.wire.strip(w) for w in windows])
        if missing:  # the runner lacked items some windows named: those go whole
            self.resent += len(missing)
            for i in missing:
                self.wire.forget(windows[i].session)
            again, again_tags, still = self._call([windows[i] for i in missing])
            if still:
                raise RuntimeError(f"the runner could not infer {len(still)} whole windows")
            probs = probs.copy()
            for j, i in enumerate(missing):
                probs[i] = again[j]
                if tags is not None and again_tags is not None:
                    tags[i] = again_tags[j]
        return torch.tensor(probs), tags  # (a copy: what Ray hands back is read-only)

    def drop_session(self, session: Hashable) -> None:
        self.wire.forget(session)
        if self.runner is not None:
            self.runner.forget.remote(session)  # fire and forget: the cache would age it out


class RunnerActor:
    """The model on one GPU (or CPU node); ``infer`` from any number of shards at once."""

    def __init__(self, cfg: Config, index: int) -> None:
        from streamer.cluster.shard import actor_logging, die_with_raylet
        from streamer.inference.model import load_model

        actor_logging(cfg.log_level)
        die_with_raylet(f"runner {index}")
        self.index = index
        self.max_batch = cfg.model.max_batch
        self.max_wait = cfg.model.max_wait_ms / 1000
        loaded = load_model(cfg.model, cfg.window)
        self.model = loaded.id
        self._fusion = loaded.make_fusion()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"runner{index}")
        self._calls: asyncio.Queue[tuple[list[WindowInputs], asyncio.Future[Answer]]] | None = None
        self._batcher: asyncio.Task[None] | None = None
        self.batches = 0
        self.windows = 0
        self.calls = 0
        self.failed = 0
        import ray

        self.node_id = ray.get_runtime_context().get_node_id()
        log.info("runner %d: model %s on %s (node %s)", index, self.model.name,
                 loaded.device, self.node_id[:12])  # fmt: skip

    async def infer(self, inputs: list[WindowInputs]) -> Answer:
        if self._calls is None:  # the actor's loop exists from the first call on
            self._calls = asyncio.Queue()
            self._batcher = asyncio.create_task(self._batch_loop(), name="runner-batcher")
        fut: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._calls.put_nowait((inputs, fut))
        self.calls += 1
        return await fut

    def _next_call(self) -> tuple[list[WindowInputs], asyncio.Future[Answer]] | None:
        assert self._calls is not None
        return None if self._calls.empty() else self._calls.get_nowait()

    def forget(self, session: Hashable) -> None:
        self._executor.submit(self._fusion.drop_session, session)

    def info(self) -> dict[str, Any]:
        return {"runner": self.index, "node_id": self.node_id, "batches": self.batches,
                "windows": self.windows, "calls": self.calls, "failed": self.failed}  # fmt: skip

    async def _batch_loop(self) -> None:
        assert self._calls is not None
        loop = asyncio.get_running_loop()
        while True:
            calls = [await self._calls.get()]
            await fill_batch(calls, self.max_batch, self.max_wait, self._calls.get,
                             self._next_call, weight=lambda c: len(c[0]))  # fmt: skip
            inputs = [w for c in calls for w in c[0]]
            try:
                probs, tags, missing = await loop.run_in_executor(
                    self._executor, self._infer, inputs
                )
            except Exception as e:  # each shard then tries its windows one by one
                self.failed += 1
                for _, fut in calls:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            self.batches += 1
            self.windows += len(inputs) - len(missing)
            k = 0
            for ins, fut in calls:
                m = len(ins)
                if not fut.done():  # (a caller that went away)
                    fut.set_result((
                        probs[k : k + m], None if tags is None else tags[k : k + m],
                        [i - k for i in missing if k <= i < k + m],
                    ))  # fmt: skip
                k += m

    def _infer(self, inputs: list[WindowInputs]) -> Answer:
        t0 = time.perf_counter()
        answer = infer_named(self._fusion, inputs)
        log.debug("runner %d: %d windows in %.1f ms (%d unresolved)", self.index, len(inputs),
                  (time.perf_counter() - t0) * 1000, len(answer[2]))  # fmt: skip
        return answer
