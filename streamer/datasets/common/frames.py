"""A picture moving over a gradient, corrupted: blur, occluders, noise and dropped frames.

A segment's :class:`VideoPlan` fixes the picture (an index into the data set's pool), a
background, a motion (position, size and rotation move linearly over the segment), and
the corruptions. :func:`render` draws the frame at time ``u`` seconds into the segment,
the picture itself drawn by the data set's ``draw``; per-frame noise comes from
``(plan.noise_seed, frame_key)``, so any frame is reproducible on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from streamer.datasets.avdigits.settings import Difficulty, Layout

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Occluder:
    x: float  # top-left at u=0, pixels
    y: float
    w: int
    h: int
    vx: float  # pixels per second
    vy: float
    grey: int


@dataclass(frozen=True)
class VideoPlan:
    image: int | None  # index into the pool's pictures, None = no picture in this segment
    shown: int | None  # the class drawn (differs from the label for a distractor)
    background: tuple[tuple[int, int, int], tuple[int, int, int]]  # gradient corners
    ink: tuple[int, int, int]
    pos0: tuple[float, float]  # picture centre at u=0 and at the segment's end
    pos1: tuple[float, float]
    size0: float  # picture height, pixels
    size1: float
    angle0: float  # radians
    angle1: float
    blur: int  # box radius, 0 = none
    contrast: float
    noise: float  # sigma, 0-255
    occluders: tuple[Occluder, ...]
    dropout: float
    noise_seed: int


def plan_video(rng: np.random.Generator, label: int, pool: Sequence[Sequence[int]],
               d: Difficulty, layout: Layout) -> VideoPlan:  # fmt: skip
    """``pool[c]``: the picture indices of class ``c`` in this split."""
    n = len(pool)
    shown: int | None = label
    r = rng.random()
    if r < d.video_absent:
        shown = None
    elif r < d.video_absent + d.video_distractor:
        shown = int((label + rng.integers(1, n)) % n)
    image = None
    if shown is not None:
        candidates = pool[shown]
        image = int(candidates[int(rng.integers(len(candidates)))])
    w, h = layout.width, layout.height
    bg = tuple(tuple(int(v) for v in rng.integers(0, 200, size=3)) for _ in range(2))
    base = np.mean(bg)
    ink_grey = 255.0 if base < 110 else 0.0
    ink = tuple(int(np.clip(ink_grey + rng.normal(0, 40), 0, 255)) for _ in range(3))
    size0, size1 = (float(rng.uniform(*d.video_size)) for _ in range(2))
    margin = max(size0, size1) / 2
    pos = [
        (float(rng.uniform(margin, w - margin)), float(rng.uniform(margin, h - margin)))
        for _ in range(2)
    ]
    occluders = tuple(
        Occluder(
            x=float(rng.uniform(0, w)),
            y=float(rng.uniform(0, h)),
            w=int(rng.integers(w // 10, w // 3)),
            h=int(rng.integers(h // 10, h // 3)),
            vx=float(rng.normal(0, w / 4)),
            vy=float(rng.normal(0, h / 4)),
            grey=int(rng.integers(0, 256)),
        )
        for _ in range(int(rng.integers(d.video_occluders[0], d.video_occluders[1] + 1)))
    )
    return VideoPlan(
        image=image,
        shown=shown,
        background=(bg[0], bg[1]),  # type: ignore[arg-type]
        ink=ink,  # type: ignore[arg-type]
        pos0=pos[0],
        pos1=pos[1],
        size0=size0,
        size1=size1,
        angle0=float(rng.normal(0, 0.25)),
        angle1=float(rng.normal(0, 0.25)),
        blur=int(rng.integers(1, 4)) if rng.random() < d.video_blur else 0,
        contrast=float(rng.uniform(*d.video_contrast)),
        noise=float(rng.uniform(*d.video_noise)),
        occluders=occluders,
        dropout=d.video_frame_dropout,
        noise_seed=int(rng.integers(2**62)),
    )


@lru_cache(maxsize=64)
def background(bg: tuple[tuple[int, int, int], tuple[int, int, int]], w: int, h: int) -> F32:
    a = np.asarray(bg[0], dtype=np.float32)
    b = np.asarray(bg[1], dtype=np.float32)
    ramp = (np.linspace(0, 1, w, dtype=np.float32)[None, :]
            + np.linspace(0, 1, h, dtype=np.float32)[:, None]) / 2  # fmt: skip
    img = a + (b - a) * ramp[..., None]
    img.setflags(write=False)
    return img.astype(np.float32)


def warp(image: F32, w: int, h: int, centre: tuple[float, float], size: float,
         angle: float) -> F32:  # fmt: skip
    """[h, w, C]: the square [S, S, C] ``image`` scaled to ``size`` px, rotated, bilinear,
    zero outside it."""
    side = image.shape[0]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    scale = side / size
    c, s = np.cos(angle), np.sin(angle)
    dx, dy = xs - centre[0], ys - centre[1]
    half = (side - 1) / 2
    u = (c * dx + s * dy) * scale + half  # source column
    v = (-s * dx + c * dy) * scale + half  # source row
    padded = np.pad(image, ((1, 1), (1, 1), (0, 0)))  # zero outside the picture
    u = np.clip(u + 1, 0, side + 1.0 - 1e-4)
    v = np.clip(v + 1, 0, side + 1.0 - 1e-4)
    u0 = u.astype(np.int64)
    v0 = v.astype(np.int64)
    fu = (u - u0).astype(np.float32)[..., None]
    fv = (v - v0).astype(np.float32)[..., None]
    top = padded[v0, u0] * (1 - fu) + padded[v0, u0 + 1] * fu
    bottom = padded[v0 + 1, u0] * (1 - fu) + padded[v0 + 1, u0 + 1] * fu
    return np.asarray(top * (1 - fv) + bottom * fv, dtype=np.float32)


def box_blur(img: F32, r: int) -> F32:
    k = 2 * r + 1
    for axis in (0, 1):
        pad = [(0, 0)] * img.ndim
        pad[axis] = (r + 1, r)
        c = np.cumsum(np.pad(img, pad, mode="edge"), axis=axis, dtype=np.float32)
        n = img.shape[axis]
        diff = np.take(c, np.arange(k, k + n), axis=axis) - np.take(c, np.arange(n), axis=axis)
        img = (diff / k).astype(np.float32)
    return img


# draw(background, plan, centre, size, angle): the frame with the picture drawn in
Draw = Callable[[F32, VideoPlan, tuple[float, float], float, float], F32]


def render(plan: VideoPlan, u: float, frame_key: int, layout: Layout,
           draw: Draw) -> npt.NDArray[np.uint8]:  # fmt: skip
    """RGB uint8 [height, width, 3] at ``u`` seconds into the segment.

    ``frame_key`` (e.g. milliseconds into the segment) seeds this frame's noise and dropout.
    """
    w, h = layout.width, layout.height
    rng = np.random.default_rng([plan.noise_seed, frame_key])
    img = background(plan.background, w, h).copy()
    dropped = rng.random() < plan.dropout
    if plan.image is not None and not dropped:
        a = min(max(u / layout.segment_s, 0.0), 1.0)
        centre = (
            plan.pos0[0] + (plan.pos1[0] - plan.pos0[0]) * a,
            plan.pos0[1] + (plan.pos1[1] - plan.pos0[1]) * a,
        )
        size = plan.size0 + (plan.size1 - plan.size0) * a
        angle = plan.angle0 + (plan.angle1 - plan.angle0) * a
        img = draw(img, plan, centre, size, angle)
    if plan.blur:
        img = box_blur(img, plan.blur)
    for o in plan.occluders:
        x = int((o.x + o.vx * u) % (w + o.w)) - o.w
        y = int((o.y + o.vy * u) % (h + o.h)) - o.h
        img[max(y, 0) : max(y + o.h, 0), max(x, 0) : max(x + o.w, 0)] = o.grey
    img += rng.normal(0.0, plan.noise, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)
