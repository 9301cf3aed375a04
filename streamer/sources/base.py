"""The source protocol: what every capture source offers the pipeline.

A source yields already converted items (:class:`~streamer.frames.VideoFrame` at the
model's size, :class:`~streamer.frames.AudioChunk` at the model's rate) stamped on the
node clock. Blocking capture (demuxers, PortAudio callbacks) runs in a thread and hands
items to the event loop through :class:`~streamer.sources.handoff.Handoff`.

Sources never retry: ``open()`` fails with a one-line
:class:`~streamer.errors.SourceOpenError`, ``recv()`` with a
:class:`~streamer.errors.SourceError`, and the pipeline reopens a live source with
jittered backoff. A finite source ends with :class:`~streamer.errors.SourceEnded`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from streamer.frames import Item, Modality

DEFAULT_QUEUE = 64
"""Items a source buffers between its capture thread and ``recv()``."""


@runtime_checkable
class Source(Protocol):
    """What the pipeline reads. A source class may subclass it to inherit the default
    :meth:`recv_nowait` (a source with no queue of its own)."""

    url: str
    modalities: frozenset[Modality]  # what recv() yields
    live: bool  # paced by the wall clock (capture devices, network, mic, synthetic, realtime file)

    @property
    def dropped(self) -> int:
        """Items dropped because the consumer fell behind (oldest first)."""
        ...

    async def open(self) -> None:
        """Start capturing; raises SourceOpenError with a one-line message."""
        ...

    async def recv(self) -> Item:
        """The next item; SourceEnded at the end of a finite source, SourceError on failure."""
        ...

    def recv_nowait(self) -> Item | None:
        """The fast path: the next item already queued, without waiting; None when none
        is (and always, for a source without a queue). It never raises the end or an
        error: the next ``recv()`` does."""
        return None

    async def close(self) -> None:
        """Stop capturing and release the device; safe to call twice or before open()."""
        ...


async def recv_batch(src: Source, limit: int) -> list[Item]:
    """The next item and those already queued behind it, at most ``limit`` in all: one
    await (one trip through the event loop) per batch instead of per item. Raises as
    ``recv()`` does, before taking any item."""
    items = [await src.recv()]
    while len(items) < limit and (item := src.recv_nowait()) is not None:
        items.append(item)
    return items
