"""Text events that mention the label, with corrections, distractors, fillers and typos.

A segment gets no events (``text_absent``), or one that mentions the label, sometimes as a
correction next to another class ("not 3, it's 7"), or (``text_misleading``) only events
that name other classes; plus, sometimes, a filler that names none. A :class:`TextStyle`
holds a data set's templates (``{L}`` the label, ``{D}``/``{D2}`` distractors) and how it
names a class. Times are seconds into the segment, inside it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from streamer.datasets.avdigits.settings import Difficulty, Layout

KEYBOARD = "qwertyuiopasdfghjklzxcvbnm"


@dataclass(frozen=True)
class TextPlan:
    events: tuple[tuple[float, str], ...]  # (seconds into the segment, text), in time order
    mentions: int | None  # the class the text points to (None: absent or misleading)


@dataclass(frozen=True)
class TextStyle:
    classes: int
    name: Callable[[np.random.Generator, int], str]  # one way to write class c
    positive: tuple[str, ...]
    correction: tuple[str, ...]
    misleading: tuple[str, ...]
    filler: tuple[str, ...]


def typos(rng: np.random.Generator, text: str) -> str:
    chars = list(text)
    for _ in range(int(rng.integers(1, 4))):
        if not chars:
            break
        i = int(rng.integers(len(chars)))
        op = int(rng.integers(4))
        if op == 0:
            del chars[i]
        elif op == 1:
            chars.insert(i, chars[i])
        elif op == 2 and i + 1 < len(chars):
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
        else:
            chars[i] = KEYBOARD[int(rng.integers(len(KEYBOARD)))]
    return "".join(chars)


def pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def plan_text(rng: np.random.Generator, label: int, d: Difficulty, layout: Layout,
              style: TextStyle) -> TextPlan:  # fmt: skip
    n = style.classes

    def other() -> int:
        return int((label + rng.integers(1, n)) % n)

    r = rng.random()
    texts: list[str] = []
    mentions: int | None = None
    if r < d.text_absent:
        pass
    elif r < d.text_absent + d.text_misleading:
        for _ in range(int(rng.integers(1, 3))):
            dd, d2 = other(), other()
            texts.append(
                pick(rng, style.misleading).format(D=style.name(rng, dd), D2=style.name(rng, d2))
            )
    else:
        mentions = label
        if rng.random() < d.text_correction:
            template = pick(rng, style.correction)
        else:
            template = pick(rng, style.positive)
        texts.append(template.format(L=style.name(rng, label), D=style.name(rng, other())))
    if texts and rng.random() < d.text_filler:
        texts.insert(int(rng.integers(len(texts) + 1)), pick(rng, style.filler))
    texts = [typos(rng, t) if rng.random() < d.text_typo else t for t in texts]
    # inside the middle of the segment, like the spoken word (see speech.SPEECH_ZONE)
    times = np.sort(rng.uniform(0.3, 0.7, size=len(texts)) * layout.segment_s)
    events = tuple((round(float(t), 3), s) for t, s in zip(times, texts, strict=True))
    return TextPlan(events=events, mentions=mentions)
