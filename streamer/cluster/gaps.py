"""Gap markers: the windows a stream could not produce while it moved.

The controller reads the node's predictions as any subscriber does (what the broker
delivered). A stream seen under a new ``run`` after another (its shard was restarted on
another node, or its host came back) gets one marker on ``P/N/S/gap``::

    {"schema": "streamer.gap/1", "node": "site", "stream": "cam1",
     "run": "<new run>", "seq": 0,                    # the first prediction seen of it
     "prev": {"run": "<old run>", "seq": 41, "window_start": 1764160040.0},
     "from": 1764160040.5, "to": 1764160052.0,      # window starts [from, to), hop apart
     "windows": 23, "reason": "restarted"}

Every window start of the stream is then accounted for: by a prediction of the old run
(seq without gaps up to ``prev.seq``), by the marker (``windows`` starts from ``from``, a
hop apart, before ``to``), or by the new run from ``to`` on. ``windows`` is 0 when the
new run starts where the old one ended. The old run's windows that its node had made but
not delivered before it died are inside the marker: it counts what subscribers missed.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

GAP_SCHEMA = "streamer.gap/1"
MAX_STREAMS = 100_000  # streams remembered (least recently seen forgotten first)
MAX_ENDED_RUNS = 10_000  # runs known to have ended (their late messages ignored)


@dataclass(frozen=True, slots=True)
class _Seen:
    run: str
    seq: int
    start: float


class GapTracker:
    def __init__(self, node: str, hop_s: float) -> None:
        self.node = node
        self.hop = hop_s
        self._last: OrderedDict[str, _Seen] = OrderedDict()
        self._ended: OrderedDict[str, None] = OrderedDict()
        self.markers = 0
        self.gap_windows: dict[str, int] = {}
        self.malformed = 0

    def observe(self, payload: bytes) -> dict[str, Any] | None:
        """One prediction as delivered; the gap marker it reveals, if any."""
        try:
            p = json.loads(payload)
            stream, run, seq = str(p["stream"]), str(p["run"]), int(p["seq"])
            start = float(p["window"]["start"])
        except (ValueError, KeyError, TypeError):
            self.malformed += 1
            return None
        if run in self._ended:
            return None  # a dead run's message delivered late: it was counted in the marker
        prev = self._last.get(stream)
        self._last[stream] = _Seen(run, seq, start) if prev is None or prev.run != run or \
            seq > prev.seq else prev  # fmt: skip
        self._last.move_to_end(stream)
        if len(self._last) > MAX_STREAMS:
            self._last.popitem(last=False)
        if prev is None or prev.run == run:
            return None
        self._ended[prev.run] = None
        if len(self._ended) > MAX_ENDED_RUNS:
            self._ended.popitem(last=False)
        first = prev.start + self.hop
        windows = max(0, round((start - first) / self.hop))
        self.markers += 1
        self.gap_windows[stream] = self.gap_windows.get(stream, 0) + windows
        return {
            "schema": GAP_SCHEMA,
            "node": self.node,
            "stream": stream,
            "run": run,
            "seq": seq,
            "prev": {"run": prev.run, "seq": prev.seq, "window_start": prev.start},
            "from": round(first, 6),
            "to": start,
            "windows": windows,
            "reason": "restarted",
            "ts": round(time.time(), 3),
        }
