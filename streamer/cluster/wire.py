"""What a shard sends its runner: each frame and audio segment once.

Windows overlap (a 2 s window every 0.5 s holds each item 4 times) and the runner caches
each item's embedding by its key (its absolute time) per stream. So a shard sends an
item's pixels or samples the first time only; later windows name it by key alone
(``(key, None)``). A 2 s window of the shipped model is 226 KB whole (8 frames of 64x64,
32,000 samples) and about 56 KB in steady state, under Ray's 100 KiB inline limit.

The runner may not hold an item a window names (its cache dropped it, or the runner was
restarted with an empty one): it answers which windows it could not infer
(:func:`unresolved`), and the shard sends those again whole (:class:`Stripper`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import torch

from models.incremental import CachedFusion, WindowInputs
from models.tags import Tag

SENT_PER_SESSION = 512  # item keys remembered per stream (a few windows' worth)
Item = tuple[Hashable, Any] | None
Tags = list[tuple[Tag, ...]] | None
# probabilities [B, C] (a row of zeros where unresolved), tags, the windows not inferred
# because they named an item the runner lacks
Answer = tuple[npt.NDArray[np.float32], Tags, list[int]]


class Stripper:
    """The shard's side: which items its runner has been sent, per stream."""

    def __init__(self, per_session: int = SENT_PER_SESSION) -> None:
        self.per_session = per_session
        self._sent: dict[Hashable, OrderedDict[tuple[str, Hashable], None]] = {}
        self.items_sent = 0
        self.items_named = 0

    def strip(self, w: WindowInputs) -> WindowInputs:
        """``w`` with the items already sent named by key alone (and the rest now sent)."""
        sent = self._sent.setdefault(w.session, OrderedDict())

        def one(modality: str, item: Item) -> Item:
            if item is None:
                return None
            k = (modality, item[0])
            if k in sent:
                sent.move_to_end(k)
                self.items_named += 1
                return (item[0], None)
            sent[k] = None
            if len(sent) > self.per_session:
                sent.popitem(last=False)
            self.items_sent += 1
            return item

        return WindowInputs(
            session=w.session,
            video=cast(Any, [one("video", v) for v in w.video]),
            audio=cast(Any, [one("audio", a) for a in w.audio]),
            text=w.text,
        )

    def forget(self, session: Hashable) -> None:
        """Send this stream's items whole again (the runner lacked some, or it ended)."""
        self._sent.pop(session, None)


def unresolved(
    windows: Sequence[WindowInputs], cached: Callable[[Hashable, str, Hashable], bool]
) -> list[int]:
    """The runner's side: indices of the windows naming an item that neither the cache
    (``cached(session, modality, key)``) nor another window to be inferred with them
    carries. Dropping a window can strand another that relied on its payload: repeated
    until none changes."""
    out: set[int] = set()
    while True:
        have = {
            (w.session, m, item[0])
            for i, w in enumerate(windows) if i not in out
            for m, items in (("video", w.video), ("audio", w.audio))
            for item in items if item is not None and item[1] is not None
        }  # fmt: skip
        more = {
            i for i, w in enumerate(windows) if i not in out
            for m, items in (("video", w.video), ("audio", w.audio))
            for item in items
            if item is not None and item[1] is None and (w.session, m, item[0]) not in have
            and not cached(w.session, m, item[0])
        }  # fmt: skip
        if not more:
            return sorted(out)
        out |= more


def infer_named(fusion: CachedFusion, inputs: Sequence[WindowInputs]) -> Answer:
    """The runner's inference: the windows' probabilities, but for those naming an item
    that neither the cache nor the batch carries (a row of zeros, their indices given)."""
    missing = unresolved(inputs, fusion.cached)
    skip = set(missing)
    rows = [i for i in range(len(inputs)) if i not in skip]
    probs = np.zeros((len(inputs), len(fusion.spec.labels)), dtype=np.float32)
    tags: Tags = None
    if rows:
        p, t = fusion.infer([inputs[i] for i in rows])
        probs[rows] = p.detach().to("cpu", torch.float32).numpy()
        if t is not None:
            tags = [()] * len(inputs)
            for i, tg in zip(rows, t, strict=True):
                tags[i] = tg
    return probs, tags, missing
