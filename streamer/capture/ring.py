"""A ring of fixed slots in shared memory: one capture process writes, the node reads.

Layout (all int64, native order)::

    header  HEAD (items written)  TAIL (items read)  BEAT (child's monotonic ns)
            CORRUPT  STALE  SKIPPED (the child's source counters)  SLOTS  PAYLOAD
            SNAPS_LOST (snapshot JPEGs the child could not hand over in time)
    slot i  SEQ (the item number it holds; -1 while being written)  KIND  PTS_NS  N
            then PAYLOAD bytes: video RGB uint8 [N, N, 3]; audio float32 [N]

Single producer, single consumer, no lock and no pickling: the producer writes item
``h`` into slot ``h % slots`` (SEQ -1, payload, fields, SEQ h) and then advances HEAD;
the consumer copies slot ``tail % slots`` out and keeps the copy only if SEQ still
reads ``tail`` afterwards. A live producer never waits: when the consumer falls behind
by a whole ring, the producer overwrites the oldest items and the consumer counts them
in :attr:`ShmRing.dropped` as it skips past (drop-oldest). An unpaced file's producer
waits for room instead (:meth:`ShmRing.full`). This relies on stores becoming visible
in program order (x86-64's TSO; aligned 8-byte stores are atomic).

The parent creates the segment and always unlinks it (:meth:`ShmRing.destroy`), also
when the child was killed; the child only attaches.
"""

from __future__ import annotations

import mmap
import os
from multiprocessing import shared_memory

import numpy as np
import numpy.typing as npt

HEAD, TAIL, BEAT, CORRUPT, STALE, SKIPPED, SLOTS, PAYLOAD, SNAPS_LOST = range(9)
HEADER = 16  # int64 fields reserved for the header
SLOT_HEADER = 4  # SEQ, KIND, PTS_NS, N
SEQ, KIND, PTS, N = range(SLOT_HEADER)
VIDEO, AUDIO = 1, 2

Slot = tuple[int, int, npt.NDArray[np.generic]]  # kind, pts, data (uint8 or float32)


class ShmRing:
    def __init__(
        self, shm: shared_memory.SharedMemory | None, buf: mmap.mmap | None = None
    ) -> None:
        self.shm = shm  # the owner's; a child maps the segment by name (``buf``)
        self.owner = shm is not None
        self._map = buf
        self.buf: memoryview = shm.buf if shm is not None else memoryview(buf)  # type: ignore[arg-type,assignment]
        self._h: npt.NDArray[np.int64] = np.ndarray((HEADER,), np.int64, self.buf)
        self.slots = int(self._h[SLOTS])
        self.payload = int(self._h[PAYLOAD])
        self._stride = SLOT_HEADER * 8 + self.payload
        self.dropped = 0  # items overwritten before the consumer read them
        self._closed = False

    @classmethod
    def create(cls, slots: int, payload: int) -> ShmRing:
        if slots < 2 or payload < 1:
            raise ValueError("a ring needs >= 2 slots of >= 1 byte")
        stride = SLOT_HEADER * 8 + -(-payload // 8) * 8
        shm = shared_memory.SharedMemory(create=True, size=HEADER * 8 + slots * stride)
        h = np.ndarray((HEADER,), np.int64, shm.buf)
        h[:] = 0
        h[SLOTS], h[PAYLOAD] = slots, stride - SLOT_HEADER * 8
        del h  # no view may outlive close()
        ring = cls(shm)
        for i in range(slots):
            ring._slot(i)[SEQ] = -1
        return ring

    @classmethod
    def attach(cls, name: str) -> ShmRing:
        """Map the parent's segment (Linux: /dev/shm/NAME) without registering it with a
        resource tracker of our own, which would unlink it when this process exits."""
        fd = os.open(f"/dev/shm/{name}", os.O_RDWR)
        try:
            return cls(None, mmap.mmap(fd, os.fstat(fd).st_size))
        finally:
            os.close(fd)

    @property
    def name(self) -> str:
        assert self.shm is not None
        return self.shm.name

    def _slot(self, i: int) -> npt.NDArray[np.int64]:
        off = HEADER * 8 + i * self._stride
        return np.ndarray((SLOT_HEADER,), np.int64, self.buf, off)

    def _data(self, i: int, dtype: type, count: int) -> npt.NDArray[np.generic]:
        off = HEADER * 8 + i * self._stride + SLOT_HEADER * 8
        return np.ndarray((count,), dtype, self.buf, off)

    def counter(self, field: int) -> int:
        return int(self._h[field])

    def set_counter(self, field: int, value: int) -> None:
        self._h[field] = value

    def __len__(self) -> int:
        """Items written and not read yet (at most ``slots``)."""
        return min(int(self._h[HEAD]) - int(self._h[TAIL]), self.slots)

    # --- the producer (the capture process) ---------------------------------------------

    def full(self) -> bool:
        return int(self._h[HEAD]) - int(self._h[TAIL]) >= self.slots

    def write(self, kind: int, pts_ns: int, n: int, data: npt.NDArray[np.generic]) -> None:
        """Item number HEAD into its slot (overwriting the oldest when full); ``data`` is
        at most ``payload`` bytes (video [n, n, 3] uint8, audio [n] float32)."""
        if data.nbytes > self.payload:
            raise ValueError(f"{data.nbytes} bytes do not fit a slot of {self.payload}")
        h = int(self._h[HEAD])
        i = h % self.slots
        slot = self._slot(i)
        slot[SEQ] = -1
        self._data(i, np.uint8, data.nbytes)[:] = data.reshape(-1).view(np.uint8)
        slot[KIND], slot[PTS], slot[N] = kind, pts_ns, n
        slot[SEQ] = h
        self._h[HEAD] = h + 1

    # --- the consumer (the node) --------------------------------------------------------

    def read(self) -> Slot | None:
        """The oldest item not read yet (a copy), or None when there is none."""
        while True:
            h, t = int(self._h[HEAD]), int(self._h[TAIL])
            if t >= h:
                return None
            if h - t >= self.slots:  # lapped: slot h % slots may be under the pen now
                skip = h - self.slots + 1 - t
                self.dropped += skip
                t += skip
                self._h[TAIL] = t
            i = t % self.slots
            slot = self._slot(i)
            if int(slot[SEQ]) != t:
                continue  # overwritten since HEAD was read: look again
            kind, pts, n = int(slot[KIND]), int(slot[PTS]), int(slot[N])
            data: npt.NDArray[np.generic]
            if kind == VIDEO:
                data = self._data(i, np.uint8, n * n * 3).reshape(n, n, 3).copy()
            else:
                data = self._data(i, np.float32, n).copy()
            if int(slot[SEQ]) != t:  # written over while copied: torn, lost
                self.dropped += 1
                self._h[TAIL] = t + 1
                continue
            self._h[TAIL] = t + 1
            return kind, pts, data

    # --- both ---------------------------------------------------------------------------

    def close(self) -> None:
        """Detach (idempotent); the owner also unlinks the segment."""
        if self._closed:
            return
        self._closed = True
        del self._h
        if self.shm is None:
            self.buf.release()
            if self._map is not None:
                self._map.close()
            return
        self.shm.close()
        try:
            self.shm.unlink()
        except FileNotFoundError:
            pass
