"""The inference runner: windows in, probabilities out, never on the event loop.

Windows from every stream go into one bounded queue. A batcher task takes up to
``max_batch`` of them (waiting at most ``max_wait_ms`` after the first) and hands the batch
to a single-thread executor, the only thread that touches the model. There each new
frame, audio segment and text event is encoded once and cached by timestamp
(:class:`models.incremental.CachedFusion`, in torch or onnxruntime); each window is
fused from the cache.

One bad item never costs other windows: when a batch fails, its windows are inferred again
one by one and only the one that still fails is dropped; a result callback that raises
loses that result alone. Every loss goes to ``on_drop(window, place)``, with ``place``
one of :data:`DROP_PLACES`, and is logged once per place and interval. The batcher runs
in the runner's own task group: if it ever dies, the error reaches the owner instead of
leaving ``drain()`` waiting for ever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import torch

from models.incremental import CachedFusion, WindowInputs
from models.spec import ModelSpec
from models.tags import Tag
from streamer.config import ModelConfig
from streamer.frames import NS, Window
from streamer.predictions import ModelId
from streamer.queues import DropQueue, fill_batch
from streamer.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

# where a window the aligner emitted can be lost on its way to a prediction
DROP_PLACES = ("inference_queue", "inference_error", "result_error")
OnDrop = Callable[[Window, str], None]


class Fusion(Protocol):
    """What the runner's inference thread calls: a :class:`CachedFusion`, or under
    ``--engine ray`` a :class:`~streamer.cluster.runner.RemoteFusion`."""

    def infer(
        self, windows: Sequence[WindowInputs]
    ) -> tuple[torch.Tensor, list[tuple[Tag, ...]] | None]: ...

    def drop_session(self, session: Hashable) -> None: ...


@dataclass(frozen=True, slots=True)
class Result:
    window: Window
    probs: npt.NDArray[np.float32]  # [C]
    inference_ms: float  # wall time of the batch this window was in
    model: ModelId | None = None  # the model that gave it (None: the runner was given none)
    tags: tuple[Tag, ...] | None = None  # what its encoders' heads saw (None: no tagger)


@dataclass(frozen=True, slots=True)
class _Out:
    """One window's outcome in the inference thread (probabilities None: it failed)."""

    window: Window
    probs: npt.NDArray[np.float32] | None
    ms: float
    tags: tuple[Tag, ...] | None = None


def window_inputs(window: Window, spec: ModelSpec) -> WindowInputs:
    """Plain model inputs for one window; keys are absolute times, so they repeat across
    the overlapping windows that share an item, and the cache hits."""
    seg = spec.segment_samples
    seg_ns = round(spec.audio_segment * NS)
    audio: list[tuple[object, npt.NDArray[np.float32]] | None] = []
    for j in range(len(window.audio) // seg):
        if window.audio_mask[j * seg : (j + 1) * seg].any():
            audio.append((window.start_ns + j * seg_ns, window.audio[j * seg : (j + 1) * seg]))
        else:
            audio.append(None)
    return WindowInputs(
        session=window.stream,
        video=[None if f is None else (f.pts_ns, f.image) for f in window.video],
        audio=audio,
        text=[
            ((e.pts_ns, e.text), e.text, (e.pts_ns - window.start_ns) / NS) for e in window.texts
        ],
    )


class InferenceRunner:
    """Async context manager; ``submit()`` windows, results go to ``on_result``."""

    def __init__(
        self,
        fusion: Fusion,
        spec: ModelSpec,
        cfg: ModelConfig,
        on_result: Callable[[Result], Awaitable[None]],
        *,
        device: torch.device,
        queue_size: int = 256,
        on_drop: OnDrop | None = None,
        model: ModelId | None = None,
    ) -> None:
        self._fusion = fusion
        self.model = model
        self._next: tuple[Fusion, ModelSpec, ModelId] | None = None  # see swap()
        self._spec = spec
        self._cfg = cfg
        self._on_result = on_result
        self._on_drop = on_drop
        self.queue: DropQueue[Window] = DropQueue(queue_size)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"infer-{device.type}")
        self._tg: asyncio.TaskGroup | None = None
        self._task: asyncio.Task[None] | None = None
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._errors = RateLimitedLog(log)
        self.batches = 0
        self.windows = 0
        self.lost: dict[str, int] = dict.fromkeys(DROP_PLACES, 0)
        self._forget: set[str] = set()  # ended streams whose cache goes once they drain

    async def __aenter__(self) -> InferenceRunner:
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        self._task = self._tg.create_task(self._loop(), name="inference-batcher")
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._tg is not None
        if self._task is not None:
            self._task.cancel()
        try:  # the task group waits for the batcher and re-raises a caller's cancellation
            await self._tg.__aexit__(*exc)
        finally:
            self._executor.shutdown(wait=True, cancel_futures=True)

    def submit_nowait(self, window: Window) -> None:
        """Queue a window from a live stream; a full queue drops its oldest (``on_drop``)."""
        self._idle.clear()
        dropped = self.queue.put_nowait(window)
        if dropped is not None:
            self._lose(dropped, "inference_queue")

    async def submit(self, window: Window) -> None:
        """Queue a window from an unpaced stream: waits for room (backpressure)."""
        self._idle.clear()
        await self.queue.put(window)

    async def drain(self) -> None:
        """Wait until every queued window has been inferred and its result delivered."""
        assert self._task is not None, "drain() outside the runner's context"
        while len(self.queue) or self._busy:
            self._idle.clear()
            idle = asyncio.ensure_future(self._idle.wait())
            try:
                await asyncio.wait([idle, self._task], return_when=asyncio.FIRST_COMPLETED)
            finally:
                idle.cancel()
            if self._task.done():
                raise RuntimeError("the inference batcher has stopped; windows are left")

    def swap(self, fusion: CachedFusion, spec: ModelSpec, model: ModelId) -> None:
        """Run another model from the next batch on: the windows of the batch being
        inferred finish on the old one, none is lost, and each stream's predictions change
        model at one window boundary. The old model's cache goes with it."""
        self._next = (fusion, spec, model)
        if not self._busy:
            self._apply_swap()

    def _apply_swap(self) -> None:
        if self._next is not None:
            self._fusion, self._spec, self.model = self._next
            self._next = None
            log.info("now running model %s %s", self.model.name, self.model.version[:19])

    def forget(self, stream: str) -> None:
        """The stream has ended: drop its cached embeddings once its last queued window
        has been inferred (the cache would only age them out otherwise)."""
        self._forget.add(stream)
        self._forget_done()

    def _forget_done(self) -> None:
        """Drop the caches of forgotten streams that have no window left to infer."""
        if not self._forget or self._busy:
            return
        queued = {w.stream for w in self.queue}
        for stream in self._forget - queued:
            self._forget.discard(stream)
            self._executor.submit(self._fusion.drop_session, stream)

    def _lose(self, window: Window, place: str) -> None:
        self.lost[place] += 1
        if self._on_drop is not None:
            self._on_drop(window, place)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        max_wait = self._cfg.max_wait_ms / 1000
        while True:
            first = await self.queue.get()
            self._apply_swap()  # between batches: one model per batch
            self._busy = 1
            batch = [first]
            await fill_batch(batch, self._cfg.max_batch, max_wait, self.queue.get,
                             self.queue.get_nowait)  # fmt: skip
            results = await self._run_batch(loop, batch)
            for r in results:
                w = r.window
                if r.probs is None:
                    self._lose(w, "inference_error")
                    continue
                try:
                    await self._on_result(Result(w, r.probs, r.ms, self.model, r.tags))
                except Exception:
                    self._errors.log(
                        logging.ERROR, "result", "stream %s: handling the result of window "
                        "%.2f failed; that prediction is lost", w.stream, w.start_ns / NS,
                        exc_info=True,
                    )  # fmt: skip
                    self._lose(w, "result_error")
            self.batches += 1
            self.windows += len(batch)
            self._busy = 0
            self._forget_done()
            self._apply_swap()
            if not len(self.queue):
                self._idle.set()

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[Window]) -> list[_Out]:
        """The batch's results; when the batch fails, each window alone, so that only a
        window that fails by itself is lost (probabilities None)."""
        try:
            return await loop.run_in_executor(self._executor, self._infer, batch)
        except Exception as e:
            if len(batch) > 1:
                self._errors.log(
                    logging.WARNING, "batch", "inference failed for a batch of %d windows "
                    "(%s: %s); trying them one by one", len(batch), type(e).__name__, e,
                )  # fmt: skip
            else:
                self._log_failed(batch[0], e)
                return [_Out(batch[0], None, 0.0)]
        each = await loop.run_in_executor(self._executor, self._infer_each, batch)
        out: list[_Out] = []
        for w, r in zip(batch, each, strict=True):
            if isinstance(r, BaseException):
                self._log_failed(w, r)
                out.append(_Out(w, None, 0.0))
            else:
                out.append(r)
        return out

    def _infer_each(self, batch: Sequence[Window]) -> list[_Out | Exception]:
        out: list[_Out | Exception] = []
        for w in batch:
            try:
                out.extend(self._infer([w]))
            except Exception as e:
                out.append(e)
        return out

    def _log_failed(self, w: Window, e: BaseException) -> None:
        self._errors.log(
            logging.ERROR, "window", "stream %s: inference failed for window %.2f (%s: %s); "
            "it is dropped (counted in dropped_by.inference_error, a gap in seq)",
            w.stream, w.start_ns / NS, type(e).__name__, e,
        )  # fmt: skip

    def _infer(self, batch: Sequence[Window]) -> list[_Out]:
        t0 = time.perf_counter()
        inputs = [window_inputs(w, self._spec) for w in batch]
        probs, tags = self._fusion.infer(inputs)
        out = probs.detach().to("cpu", torch.float32).numpy()
        ms = (time.perf_counter() - t0) * 1000
        return [
            _Out(w, p, ms, None if tags is None else tags[i])
            for i, (w, p) in enumerate(zip(batch, out, strict=True))
        ]
