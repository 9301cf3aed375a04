"""The publisher's outbox: a bounded FIFO of messages waiting for the broker's ack.

Messages leave the outbox only when the broker has acknowledged them (:meth:`Outbox.peek`
then :meth:`Outbox.confirm`, or :meth:`Outbox.get` by sequence number then
:meth:`Outbox.confirm_through`), so a connection lost mid-batch leaves the unconfirmed
ones at the head, to be sent again after reconnecting (duplicates are possible, loss is
not). Every message put gets the next sequence number; ``head_seq`` is the oldest's.
When full, :meth:`Outbox.put` drops the oldest message and counts it: producers never
block and nothing grows without bound.

Not thread-safe: use it from the event loop's thread.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool = False


@dataclass(frozen=True, slots=True)
class Batch:
    """Messages peeked from the head; ``seq`` is the sequence number of ``messages[0]``."""

    seq: int
    messages: tuple[Message, ...]

    def __len__(self) -> int:
        return len(self.messages)


class Outbox:
    def __init__(self, maxlen: int) -> None:
        if maxlen < 1:
            raise ValueError(f"maxlen must be >= 1, got {maxlen}")
        self.maxlen = maxlen
        self._items: deque[Message] = deque()
        self._head_seq = 0  # sequence number of _items[0]; every put takes the next one
        self.dropped = 0
        self._nonempty = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def head_seq(self) -> int:
        """Sequence number of the oldest message (of the next one put, when empty)."""
        return self._head_seq

    @property
    def end_seq(self) -> int:
        """Sequence number the next message put will get."""
        return self._head_seq + len(self._items)

    def get(self, seq: int) -> Message | None:
        """The message with sequence number ``seq``, or None if dropped/confirmed/not yet put."""
        i = seq - self._head_seq
        return self._items[i] if 0 <= i < len(self._items) else None

    def put(self, message: Message) -> bool:
        """Append; when full, drop the oldest first. Returns False if one was dropped."""
        kept = True
        if len(self._items) >= self.maxlen:
            self._items.popleft()
            self._head_seq += 1
            self.dropped += 1
            kept = False
        self._items.append(message)
        self._nonempty.set()
        self._empty.clear()
        return kept

    def peek(self, n: int) -> Batch:
        """Up to ``n`` messages from the head, in order, without removing them."""
        k = min(n, len(self._items))
        return Batch(self._head_seq, tuple(self._items[i] for i in range(k)))

    def confirm(self, batch: Batch) -> int:
        """Remove the messages of ``batch`` still in the outbox; returns how many.

        Those already dropped by overflow while in flight are skipped, so a confirmation
        never removes a message that was not in the batch.
        """
        return self.confirm_through(batch.seq + len(batch) - 1)

    def confirm_through(self, seq: int) -> int:
        """Remove every message with a sequence number <= ``seq``; returns how many."""
        n = 0
        while self._items and self._head_seq <= seq:
            self._items.popleft()
            self._head_seq += 1
            n += 1
        if not self._items:
            self._nonempty.clear()
            self._empty.set()
        return n

    async def wait_nonempty(self) -> None:
        await self._nonempty.wait()

    async def wait_empty(self) -> None:
        await self._empty.wait()
