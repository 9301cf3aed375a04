"""Text events that mention the digit, in words or figures, with typos and distractors.

A segment gets no events (``text_absent``), or one that mentions the label, sometimes as a
correction next to another number ("not 3, it's 7"), or (``text_misleading``) only events
that name other numbers; plus, sometimes, a filler without any digit. Times are seconds
into the segment, inside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamer.datasets.avdigits.settings import Difficulty, Layout
from streamer.datasets.avdigits.speech import WORDS

POSITIVE = (
    "I think it's a {L}",
    "number {L} please",
    "it's {L}",
    "looks like a {L} to me",
    "{L}",
    "the digit is {L}",
    "definitely a {L}",
    "that's a {L}, right?",
    "ok {L}",
    "I see {L}",
)
CORRECTION = (
    "not {D}, it's {L}",
    "I said {L}, not {D}",
    "{D}? no, {L}",
    "was {D} before, now {L}",
    "it's {L}, and {D} minutes left",
    "room {D}: shows a {L}",
)
MISLEADING = (
    "is it a {D}?",
    "maybe {D}",
    "I have {D} apples",
    "call me in {D} minutes",
    "{D} or {D2}, hard to say",
    "looks like a {D}",
)
FILLER = (
    "hmm",
    "hard to tell",
    "can you see it?",
    "what is that",
    "too noisy here",
    "wait",
    "again please",
)
KEYBOARD = "qwertyuiopasdfghjklzxcvbnm"


@dataclass(frozen=True)
class TextPlan:
    events: tuple[tuple[float, str], ...]  # (seconds into the segment, text), in time order
    mentions: int | None  # the digit the text points to (None: absent or misleading)


def _name(rng: np.random.Generator, digit: int) -> str:
    return WORDS[digit] if rng.random() < 0.5 else str(digit)


def _typos(rng: np.random.Generator, text: str) -> str:
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


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _other(rng: np.random.Generator, label: int) -> int:
    return int((label + rng.integers(1, 10)) % 10)


def plan_text(rng: np.random.Generator, label: int, d: Difficulty, layout: Layout) -> TextPlan:
    r = rng.random()
    texts: list[str] = []
    mentions: int | None = None
    if r < d.text_absent:
        pass
    elif r < d.text_absent + d.text_misleading:
        for _ in range(int(rng.integers(1, 3))):
            dd, d2 = _other(rng, label), _other(rng, label)
            texts.append(_pick(rng, MISLEADING).format(D=_name(rng, dd), D2=_name(rng, d2)))
    else:
        mentions = label
        if rng.random() < d.text_correction:
            template = _pick(rng, CORRECTION)
        else:
            template = _pick(rng, POSITIVE)
        texts.append(template.format(L=_name(rng, label), D=_name(rng, _other(rng, label))))
    if texts and rng.random() < d.text_filler:
        texts.insert(int(rng.integers(len(texts) + 1)), _pick(rng, FILLER))
    texts = [_typos(rng, t) if rng.random() < d.text_typo else t for t in texts]
    # inside the middle of the segment, like the spoken word (see speech.SPEECH_ZONE)
    times = np.sort(rng.uniform(0.3, 0.7, size=len(texts)) * layout.segment_s)
    events = tuple((round(float(t), 3), s) for t, s in zip(times, texts, strict=True))
    return TextPlan(events=events, mentions=mentions)
