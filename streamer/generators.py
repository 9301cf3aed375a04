"""Content generators for ``synthetic:NAME`` URLs, by name.

A generator is content as a function of epoch time (video, audio, text and the true
label), which :class:`~streamer.sources.synthetic.SyntheticSource` paces like a live
device. Generators live with their data sets, which sources do not import: this table
names the module that holds each one, imported on first use, as an entry point would.

    avdigits   streamer.datasets.avdigits.live   a handwritten digit + the spoken word

A generator module exposes ``GENERATOR``, an object with :class:`Generator`'s methods.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Protocol

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]

GENERATORS: dict[str, str] = {"avdigits": "streamer.datasets.avdigits.live"}


class Generator(Protocol):
    """Content of one ``seed`` as a function of epoch time; every call is deterministic."""

    def check(self) -> None:
        """Raise a :class:`~streamer.errors.StreamerError` (one line) when the generator
        cannot run on this machine, a missing tool say; retrying will not help."""

    def frame_at(self, seed: int, t_ns: int) -> npt.NDArray[np.uint8]:
        """RGB uint8 [H, W, 3]: the picture at ``t_ns``."""
        ...

    def audio_at_rate(self, seed: int, first: int, count: int, rate: int) -> F32:
        """float32 [count]: samples ``first .. first+count`` at ``rate``, sample 0 at time 0."""
        ...

    def text_between(self, seed: int, t0_s: float) -> Iterator[tuple[float, str]]:
        """The text events ``(epoch seconds, text)`` from ``t0_s`` on, endless, in order."""
        ...

    def label_at(self, seed: int, t_s: float) -> str:
        """The true label at ``t_s`` epoch seconds."""
        ...


def generator(name: str) -> Generator:
    """The generator registered as ``name`` (KeyError for an unknown one)."""
    found: Generator = importlib.import_module(GENERATORS[name]).GENERATOR
    return found
