"""Spoken digits: the digit's English word, said as :mod:`streamer.datasets.common.speech`
says any word (held-out voices in test, coloured noise at a random SNR)."""

from __future__ import annotations

import shutil  # noqa: F401  (the tests patch speech.shutil.which)

import numpy as np

from streamer.datasets.avdigits.settings import Difficulty, Split
from streamer.datasets.common import speech
from streamer.datasets.common.speech import (
    TEST_VOICES,
    TRAIN_VOICES,
    AudioPlan,
    EspeakMissing,
    WordKey,
    prefetch,
    render,
    require_espeak,
    synthesise,
    voices,
)

__all__ = [
    "TEST_VOICES",
    "TRAIN_VOICES",
    "WORDS",
    "AudioPlan",
    "EspeakMissing",
    "WordKey",
    "plan_audio",
    "prefetch",
    "render",
    "require_espeak",
    "synthesise",
    "voices",
]

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def plan_audio(rng: np.random.Generator, label: int, split: Split, d: Difficulty) -> AudioPlan:
    return speech.plan_audio(rng, label, split, d, WORDS)
