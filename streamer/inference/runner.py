"""The inference runner: windows in, probabilities out, never on the event loop.

Windows from every stream go into one bounded queue. A batcher task takes up to
``max_batch`` of them (waiting at most ``max_wait_ms`` after the first) and hands the batch
to a single-thread executor, the only thread that touches the model. There each new
frame, audio segment and text event is encoded once and cached by timestamp
(:class:`models.incremental.CachedFusion`, in torch or onnxruntime); each window is
fused from the cache.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType

import numpy as np
import numpy.typing as npt
import torch

from models.incremental import CachedFusion, WindowInputs
from models.spec import ModelSpec
from streamer.config import ModelConfig
from streamer.frames import NS, Window
from streamer.queues import DropQueue

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Result:
    window: Window
    probs: npt.NDArray[np.float32]  # [C]
    inference_ms: float  # wall time of the batch this window was in


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
        fusion: CachedFusion,
        spec: ModelSpec,
        cfg: ModelConfig,
        on_result: Callable[[Result], Awaitable[None]],
        *,
        device: torch.device,
        queue_size: int = 256,
        on_drop: Callable[[Window], None] | None = None,
    ) -> None:
        self._fusion = fusion
        self._spec = spec
        self._cfg = cfg
        self._on_result = on_result
        self._on_drop = on_drop
        self.queue: DropQueue[Window] = DropQueue(queue_size)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"infer-{device.type}")
        self._task: asyncio.Task[None] | None = None
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.batches = 0
        self.windows = 0

    async def __aenter__(self) -> InferenceRunner:
        self._task = asyncio.create_task(self._loop(), name="inference-batcher")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True, cancel_futures=True)

    def submit_nowait(self, window: Window) -> None:
        """Queue a window from a live stream; a full queue drops its oldest (``on_drop``)."""
        self._idle.clear()
        dropped = self.queue.put_nowait(window)
        if dropped is not None and self._on_drop is not None:
            self._on_drop(dropped)

    async def submit(self, window: Window) -> None:
        """Queue a window from an unpaced stream: waits for room (backpressure)."""
        self._idle.clear()
        await self.queue.put(window)

    async def drain(self) -> None:
        """Wait until every queued window has been inferred and its result delivered."""
        while len(self.queue) or self._busy:
            self._idle.clear()
            await self._idle.wait()

    def forget(self, stream: str) -> None:
        self._executor.submit(self._fusion.drop_session, stream)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        max_wait = self._cfg.max_wait_ms / 1000
        while True:
            first = await self.queue.get()
            self._busy = 1
            batch = [first]
            deadline = loop.time() + max_wait
            while len(batch) < self._cfg.max_batch:
                if len(self.queue):
                    batch.append(self.queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), remaining))
                except TimeoutError:
                    break
            try:
                probs, ms = await loop.run_in_executor(self._executor, self._infer, batch)
            except Exception:
                log.exception("inference failed for a batch of %d windows; dropped", len(batch))
                probs, ms = None, 0.0
            if probs is not None:
                for w, p in zip(batch, probs, strict=True):
                    await self._on_result(Result(w, p, ms))
            self.batches += 1
            self.windows += len(batch)
            self._busy = 0
            if not len(self.queue):
                self._idle.set()

    def _infer(self, batch: Sequence[Window]) -> tuple[npt.NDArray[np.float32], float]:
        t0 = time.perf_counter()
        inputs = [window_inputs(w, self._spec) for w in batch]
        probs = self._fusion(inputs)
        out = probs.detach().to("cpu", torch.float32).numpy()
        return out, (time.perf_counter() - t0) * 1000
