"""Text events that mention the digit, in words or figures, with typos and distractors.

A segment gets no events (``text_absent``), or one that mentions the label, sometimes as a
correction next to another number ("not 3, it's 7"), or (``text_misleading``) only events
that name other numbers; plus, sometimes, a filler without any digit (the machinery is
:mod:`streamer.datasets.common.text`'s).
"""

from __future__ import annotations

import numpy as np

from streamer.datasets.avdigits.settings import Difficulty, Layout
from streamer.datasets.avdigits.speech import WORDS
from streamer.datasets.common import text
from streamer.datasets.common.text import TextPlan

__all__ = ["TextPlan", "plan_text"]

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


def _name(rng: np.random.Generator, digit: int) -> str:
    return WORDS[digit] if rng.random() < 0.5 else str(digit)


STYLE = text.TextStyle(10, _name, POSITIVE, CORRECTION, MISLEADING, FILLER)


def plan_text(rng: np.random.Generator, label: int, d: Difficulty, layout: Layout) -> TextPlan:
    return text.plan_text(rng, label, d, layout, STYLE)
