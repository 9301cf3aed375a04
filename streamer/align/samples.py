"""Audio samples held by absolute sample index, for the aligner.

Sample ``i`` of a stream is the one at ``i / rate`` seconds after the epoch. The buffer
keeps sorted, disjoint runs of consecutive samples, so gaps cost nothing and a window is
read with two bisections. A write over samples already held replaces them: the last
write wins.

A live source appends chunk after chunk. A write past every held sample starts a run in
a buffer of ``RUN_CAPACITY`` samples, and the chunks that continue it are copied into
that buffer's spare room, so an append costs one copy of its own samples (no regrowth)
and a window is read from a few runs, not from one per chunk.
"""

from __future__ import annotations

import bisect

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.float32]

RUN_CAPACITY = 16_384  # samples per append buffer (about 1 s at 16 kHz)


class SampleBuffer:
    def __init__(self) -> None:
        self._starts: list[int] = []  # run j holds samples [starts[j], ends[j])
        self._ends: list[int] = []
        self._runs: list[Samples] = []  # our own copies (or views of them)
        self.count = 0  # samples held
        # the newest run while it is a view of an append buffer with room: (buffer, the
        # view that is self._runs[-1], samples of the buffer used)
        self._tail: tuple[Samples, Samples, int] | None = None

    def __len__(self) -> int:
        return self.count

    def write(self, i: int, samples: Samples) -> None:
        """Hold ``samples`` as samples ``i, i + 1, ...``, replacing any held there."""
        a, b = i, i + len(samples)
        if a >= b:
            return
        if not self._ends or a >= self._ends[-1]:
            self._append(a, samples)
            return
        lo = bisect.bisect_right(self._ends, a)  # the first run that ends after a
        hi = bisect.bisect_left(self._starts, b)  # the first run that starts at or after b
        starts: list[int] = []
        ends: list[int] = []
        runs: list[Samples] = []
        removed = 0
        if lo < hi and self._starts[lo] < a:  # keep the head of a run we cut into
            starts.append(self._starts[lo])
            ends.append(a)
            runs.append(self._runs[lo][: a - self._starts[lo]])
        starts.append(a)
        ends.append(b)
        runs.append(np.array(samples, dtype=np.float32, copy=True))
        if lo < hi and self._ends[hi - 1] > b:  # ...and the tail
            starts.append(b)
            ends.append(self._ends[hi - 1])
            runs.append(self._runs[hi - 1][b - self._starts[hi - 1] :])
        for j in range(lo, hi):
            removed += self._ends[j] - self._starts[j]
        self._starts[lo:hi] = starts
        self._ends[lo:hi] = ends
        self._runs[lo:hi] = runs
        self.count += sum(e - s for s, e in zip(starts, ends, strict=True)) - removed

    def _append(self, a: int, samples: Samples) -> None:
        """Samples from ``a`` on, past every held one: into the newest run's buffer when
        they continue it and fit, else into a new run with a buffer of its own."""
        n = len(samples)
        tail = self._tail
        if tail is not None and self._runs and self._runs[-1] is tail[1] and a == self._ends[-1]:
            buf, view, used = tail
            if used + n <= len(buf):
                buf[used : used + n] = samples
                grown = buf[used - len(view) : used + n]
                self._runs[-1] = grown
                self._ends[-1] = a + n
                self._tail = (buf, grown, used + n)
                self.count += n
                return
        buf = np.empty(max(RUN_CAPACITY, n), dtype=np.float32)
        buf[:n] = samples
        view = buf[:n]
        self._starts.append(a)
        self._ends.append(a + n)
        self._runs.append(view)
        self._tail = (buf, view, n)
        self.count += n

    def evict_before(self, i: int) -> int:
        """Forget every sample before ``i``; how many there were."""
        lo = bisect.bisect_right(self._ends, i)  # runs [0, lo) end at or before i
        removed = sum(self._ends[j] - self._starts[j] for j in range(lo))
        del self._starts[:lo], self._ends[:lo], self._runs[:lo]
        if self._starts and self._starts[0] < i:
            cut = i - self._starts[0]
            self._runs[0] = self._runs[0][cut:]
            self._starts[0] = i
            removed += cut
        self.count -= removed
        return removed

    def first(self) -> int | None:
        return self._starts[0] if self._starts else None

    def nth(self, n: int) -> int:
        """The index of the ``n``-th oldest sample held (0: the oldest)."""
        for s, e in zip(self._starts, self._ends, strict=True):
            if n < e - s:
                return s + n
            n -= e - s
        raise IndexError(n)

    def any_in(self, a: int, b: int) -> bool:
        """Is any sample in [a, b) held?"""
        lo = bisect.bisect_right(self._ends, a)
        return lo < len(self._starts) and self._starts[lo] < b

    def read(self, a: int, b: int) -> tuple[Samples, npt.NDArray[np.bool_]]:
        """Samples [a, b), zero where none is held, and the mask of those held (copies)."""
        out = np.zeros(b - a, dtype=np.float32)
        mask = np.zeros(b - a, dtype=np.bool_)
        j = bisect.bisect_right(self._ends, a)
        while j < len(self._starts) and self._starts[j] < b:
            s, e = max(self._starts[j], a), min(self._ends[j], b)
            out[s - a : e - a] = self._runs[j][s - self._starts[j] : e - self._starts[j]]
            mask[s - a : e - a] = True
            j += 1
        return out, mask
