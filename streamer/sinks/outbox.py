"""The publisher's outbox: a bounded FIFO of messages waiting for the broker's ack.

Messages leave the outbox only when the broker has acknowledged them (:meth:`Outbox.get`
by sequence number, then :meth:`Outbox.confirm_through`), so a connection lost mid-batch
leaves the unconfirmed ones at the head, to be sent again after reconnecting (duplicates
are possible, loss is not). Every message put gets the next sequence number; ``head_seq``
is the oldest's.
When full, :meth:`Outbox.put` drops the oldest message and counts it (the rule of
:class:`streamer.queues.DropBuffer`, which holds them): producers never block and nothing
grows without bound.

Not thread-safe: use it from the event loop's thread.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from streamer.queues import DropBuffer


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
        self._items: DropBuffer[Message] = DropBuffer(maxlen)  # ValueError below 1
        self.maxlen = maxlen
        self._end_seq = 0  # every put takes the next sequence number
        self._empty = asyncio.Event()
        self._empty.set()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def dropped(self) -> int:
        return self._items.dropped

    @property
    def head_seq(self) -> int:
        """Sequence number of the oldest message (of the next one put, when empty)."""
        return self._end_seq - len(self._items)

    @property
    def end_seq(self) -> int:
        """Sequence number the next message put will get."""
        return self._end_seq

    def get(self, seq: int) -> Message | None:
        """The message with sequence number ``seq``, or None if dropped/confirmed/not yet put."""
        i = seq - self.head_seq
        return self._items[i] if 0 <= i < len(self._items) else None

    def replace(self, seq: int, message: Message) -> bool:
        """Put ``message`` in the place of the one numbered ``seq``; False if it is gone."""
        i = seq - self.head_seq
        if not 0 <= i < len(self._items):
            return False
        self._items[i] = message
        return True

    def put(self, message: Message) -> bool:
        """Append; when full, drop the oldest first. Returns False if one was dropped."""
        kept = self._items.push(message) is None
        self._end_seq += 1
        self._empty.clear()
        return kept

    def peek(self, n: int) -> Batch:
        """Up to ``n`` messages from the head, in order, without removing them."""
        k = min(n, len(self._items))
        return Batch(self.head_seq, tuple(self._items[i] for i in range(k)))

    def confirm_through(self, seq: int) -> int:
        """Remove every message with a sequence number <= ``seq``; returns how many.

        Those already dropped by overflow while in flight are skipped, so a confirmation
        never removes a message that was not sent.
        """
        n = 0
        while len(self._items) and self.head_seq <= seq:
            self._items.pop()
            n += 1
        if not len(self._items):
            self._empty.set()
        return n

    async def wait_empty(self) -> None:
        await self._empty.wait()
