"""Tags: what a pretrained encoder's own head recognises in the items of a window.

A frozen encoder may come with a tagger (``FrozenEncoder(tagger=...)``): for each item it
encodes (a frame, an audio segment, a text event), a few ``(tag, score)`` pairs, e.g. the
ImageNet classes of a frame or "speech" for an audio segment. Item tags are computed once,
when the item is encoded, and cached with its embedding. A window's tags, per modality,
are the best score of each tag over the window's items, the :data:`MAX_PER_MODALITY`
best at or above :data:`MIN_SCORE`, best first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

ItemTags = tuple[tuple[str, float], ...]  # (tag, score in [0, 1]) of one item

MAX_PER_MODALITY = 5
MIN_SCORE = 0.1


@dataclass(frozen=True, slots=True)
class Tag:
    tag: str
    score: float
    modality: str


def window_tags(items: Mapping[str, Iterable[ItemTags]]) -> tuple[Tag, ...]:
    """The window's tags from its items' tags, per modality (modalities in order given)."""
    out: list[Tag] = []
    for modality, per_item in items.items():
        best: dict[str, float] = {}
        for tags in per_item:
            for tag, score in tags:
                if score > best.get(tag, -1.0):
                    best[tag] = score
        ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))
        out.extend(
            Tag(tag, round(float(score), 4), modality)
            for tag, score in ranked[:MAX_PER_MODALITY]
            if score >= MIN_SCORE
        )
    return tuple(out)
