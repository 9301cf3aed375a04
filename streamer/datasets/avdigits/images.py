"""Handwritten digits (sklearn's ``load_digits``, 8x8, no download) drawn into frames.

A segment's :class:`VideoPlan` fixes the digit image, a background, a motion (position,
size and rotation move linearly over the segment), and the corruptions: blur, contrast,
gaussian noise, moving occluders and dropped frames. :func:`render` draws the frame at
time ``u`` seconds into the segment; per-frame noise comes from ``(plan.noise_seed, ms)``,
so any frame is reproducible on its own.

The 1,797 images are split by index: every fifth image (index % 5 == 0) is a test image.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import numpy.typing as npt

from streamer.datasets.avdigits.settings import Difficulty, Layout, Split
from streamer.datasets.common import frames
from streamer.datasets.common.frames import VideoPlan

F32 = npt.NDArray[np.float32]
TEST_EVERY = 5


@lru_cache(maxsize=1)
def _digits() -> tuple[F32, npt.NDArray[np.int64]]:
    from sklearn.datasets import load_digits  # lazy: a slow import

    d = load_digits()
    images = (np.asarray(d.images, dtype=np.float32) / 16.0).astype(np.float32)  # [1797, 8, 8]
    return images, np.asarray(d.target, dtype=np.int64)


def in_split(index: int, split: Split) -> bool:
    return (index % TEST_EVERY == 0) == (split == "test")


@lru_cache(maxsize=4)
def pool(split: Split) -> tuple[tuple[int, ...], ...]:
    """Image indices of ``split``, per digit: ``pool(split)[d]``."""
    _, target = _digits()
    return tuple(
        tuple(i for i in range(len(target)) if target[i] == d and in_split(i, split))
        for d in range(10)
    )


def plan_video(
    rng: np.random.Generator, label: int, split: Split, d: Difficulty, layout: Layout
) -> VideoPlan:
    return frames.plan_video(rng, label, pool(split), d, layout)


def _draw(img: F32, plan: VideoPlan, centre: tuple[float, float], size: float,
          angle: float) -> F32:  # fmt: skip
    images, _ = _digits()
    assert plan.image is not None
    mask = frames.warp(images[plan.image][..., None], img.shape[1], img.shape[0], centre,
                       size, angle)  # fmt: skip
    ink = np.asarray(plan.ink, dtype=np.float32)
    return np.asarray(img + (ink - img) * mask * plan.contrast, dtype=np.float32)


def render(plan: VideoPlan, u: float, frame_key: int, layout: Layout) -> npt.NDArray[np.uint8]:
    """RGB uint8 [height, width, 3] at ``u`` seconds into the segment (see frames.render)."""
    return frames.render(plan, u, frame_key, layout, _draw)
