"""The sink interface: where a node's predictions, statuses and stats go.

A sink is an async context manager. ``publish(event)`` takes one typed event and never
blocks: a sink that writes slowly (a disk, a broker that is down) buffers within a bound
and drops its oldest, counting it in ``dropped``. ``drain(timeout)`` waits until what was
published is delivered and returns how many predictions were not. ``failed`` says,
after the exit, that the sink lost what it had promised to keep (the exit code is 1).

The events (all frozen): :class:`~streamer.predictions.Prediction`, :class:`Status`
(a modality of a stream goes on- or offline), :class:`StreamState` (a stream starts or
stops), :class:`StatsReport` (the periodic stats) and
:class:`~streamer.events.event.EventMessage` (an event's new, update or end) and
:class:`~streamer.snapshots.snapshots.SnapshotMessage` (the JPEG of an event's peak). A sink
takes what it has a use for and ignores the rest. Writing a sink for Kafka or a webhook
is one class: subclass :class:`BufferedSink` and write ``write(batch)``.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, Self, runtime_checkable

from streamer.events.event import EventMessage
from streamer.frames import Modality
from streamer.predictions import Prediction
from streamer.queues import DropQueue
from streamer.ratelog import RateLimitedLog
from streamer.snapshots.snapshots import SnapshotMessage

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Status:
    """A modality of a stream has come online (capturing) or gone offline."""

    stream: str
    modality: Modality
    online: bool


@dataclass(frozen=True, slots=True)
class StreamState:
    """A stream has started (``online``) or ended or been stopped (``stopped``)."""

    stream: str
    state: Literal["online", "stopped"]


@dataclass(frozen=True, slots=True)
class StatsReport:
    """The node's counters (the ``stats`` JSON object, :meth:`Node.snapshot`)."""

    body: Mapping[str, Any]


Event = Prediction | Status | StreamState | StatsReport | EventMessage | SnapshotMessage


class SinkWriteError(Exception):
    """A write delivered part of its batch: ``lost`` of it did not make it."""

    def __init__(self, lost: int, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.lost = lost


@runtime_checkable
class Sink(Protocol):
    name: str

    @property
    def dropped(self) -> int:
        """Predictions this sink lost: its buffer overflowed or a write failed."""
        ...

    @property
    def failed(self) -> bool:
        """After the exit: the sink could not keep what it had promised to."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc: Any) -> None: ...

    def publish(self, event: Event) -> None:
        """Take one event; never blocks, never raises for a slow or absent destination."""
        ...

    async def drain(self, timeout: float) -> int:  # noqa: ASYNC109 - returns a count
        """Wait until what was published is delivered, ``timeout`` s at most; return how
        many predictions are still undelivered."""
        ...


class BufferedSink(ABC):
    """A sink whose destination may be slow: predictions wait in a bounded drop-oldest
    buffer (``buffer`` items) and one task hands them to :meth:`write` in batches, in
    order. A write that raises loses its batch (or what its :class:`SinkWriteError`
    says), counted in ``dropped`` and logged once per interval, and the next batch is
    tried again. Only predictions are buffered; override :meth:`publish` for others."""

    name = "buffered"

    def __init__(self, *, buffer: int = 1024, batch: int = 256) -> None:
        self._queue: DropQueue[Prediction] = DropQueue(buffer)
        self._batch = batch
        self._write_failed = 0
        self._writing = 0  # predictions taken from the buffer and not yet written
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._errors = RateLimitedLog(log)

    @property
    def dropped(self) -> int:
        return self._queue.dropped + self._write_failed

    @property
    def failed(self) -> bool:
        return False

    @property
    def pending(self) -> int:
        return len(self._queue) + self._writing

    @abstractmethod
    async def write(self, batch: list[Prediction]) -> None:
        """Deliver ``batch`` (oldest first); raise to report that it was lost."""

    async def opened(self) -> None:  # noqa: B027 - a hook, empty unless overridden
        """Called on enter, before the writer starts."""

    async def closed(self) -> None:  # noqa: B027 - a hook, empty unless overridden
        """Called on exit, after the writer stopped."""

    def publish(self, event: Event) -> None:
        if isinstance(event, Prediction):
            self._idle.clear()
            self._queue.put_nowait(event)

    async def drain(self, timeout: float) -> int:  # noqa: ASYNC109 - returns a count
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            pass
        return self.pending

    async def __aenter__(self) -> Self:
        await self.opened()
        self._task = asyncio.create_task(self._run(), name=f"sink-{self.name}")
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
        left = self.pending  # never to be written: lost with the process
        if left:
            self._write_failed += left
            self._queue.clear()
            self._writing = 0
            log.warning("sink %s: %d predictions not written before shutdown", self.name, left)
        await self.closed()

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._batch and (more := self._queue.get_nowait()) is not None:
                batch.append(more)
            self._writing = len(batch)
            try:
                await self.write(batch)
            except Exception as e:  # noqa: BLE001 - a sink reports, it never ends the node
                lost = e.lost if isinstance(e, SinkWriteError) else len(batch)
                self._write_failed += lost
                why = str(e) if isinstance(e, SinkWriteError) else f"{type(e).__name__}: {e}"
                self._errors.log(
                    logging.ERROR, "write", "sink %s: %d predictions lost: %s",
                    self.name, lost, why,
                )  # fmt: skip
            self._writing = 0  # (a cancelled write leaves it for the exit to count)
            if not len(self._queue):
                self._idle.set()


class LocalSink:
    """A base for sinks that deliver in the process, at once (nothing to drain): the
    HTTP server's live events and metrics, a test's memory. Subclasses write
    :meth:`publish`."""

    name = "local"
    dropped = 0
    failed = False

    def publish(self, event: Event) -> None:  # pragma: no cover - every subclass has one
        raise NotImplementedError

    async def drain(self, timeout: float) -> int:  # noqa: ASYNC109 - the protocol's
        return 0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        return None
