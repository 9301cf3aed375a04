"""The AV-objects pictures as RGBA sprites: [SIDE, SIDE, 4] float32, premultiplied.

Emoji come from the Noto Color Emoji font (Debian's ``fonts-noto-color-emoji``, SIL OFL
1.1), which Pillow renders only at size 109 with ``embedded_color=True``; photos from
scikit-image's bundled sample data (``pip install 'streamer[avobjects]'``), centre-cropped
square with a feathered edge. Every picture is checked to render non-blank.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

from streamer.datasets.avdigits.settings import Split
from streamer.datasets.avobjects.classes import CLASSES
from streamer.errors import StreamerError

F32 = npt.NDArray[np.float32]
SIDE = 96  # sprite side in pixels (a frame draws it at 50-100 px)
FONT_SIZE = 109  # the one bitmap size NotoColorEmoji.ttf has
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts")
FONT_FILE = "NotoColorEmoji.ttf"


class EmojiFontMissing(StreamerError):
    def __init__(self) -> None:
        super().__init__(
            "the Noto Color Emoji font is not installed (apt-get install fonts-noto-color-emoji)"
        )


class PicturesMissing(StreamerError):
    def __init__(self, package: str) -> None:
        super().__init__(f"AV-objects needs {package}: pip install 'streamer[avobjects]'")


@dataclass(frozen=True)
class Picture:
    label: int  # index into CLASSES
    source: str  # "emoji:<glyph>" or "skimage:<name>"
    split: Split


@lru_cache(maxsize=1)
def catalogue() -> tuple[Picture, ...]:
    """Every picture, in a fixed order: a sprite's index is its place here."""
    out: list[Picture] = []
    for c, cls in enumerate(CLASSES):
        out += [Picture(c, f"emoji:{g}", "train") for g in cls.train]
        out += [Picture(c, f"skimage:{p}", "train") for p in cls.photos]
        out += [Picture(c, f"emoji:{g}", "test") for g in cls.test]
    return tuple(out)


@lru_cache(maxsize=4)
def pool(split: Split) -> tuple[tuple[int, ...], ...]:
    """Picture indices of ``split``, per class: ``pool(split)[c]``."""
    pics = catalogue()
    return tuple(
        tuple(i for i, p in enumerate(pics) if p.label == c and p.split == split)
        for c in range(len(CLASSES))
    )


def font_path() -> Path:
    """NotoColorEmoji.ttf; :class:`EmojiFontMissing` when it is not installed."""
    for root in FONT_DIRS:
        found = sorted(Path(root).rglob(FONT_FILE)) if Path(root).is_dir() else []
        if found:
            return found[0]
    raise EmojiFontMissing()


def _require_pillow() -> None:
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise PicturesMissing("Pillow") from None


def _square(rgba: npt.NDArray[np.uint8]) -> F32:
    """An RGBA uint8 picture, cropped to its content, padded square, SIDE px, premultiplied."""
    _require_pillow()
    from PIL import Image

    ys, xs = np.nonzero(rgba[..., 3] > 0)
    if len(ys) == 0:
        raise StreamerError("an AV-objects picture rendered blank")
    crop = rgba[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    side = max(crop.shape[:2])
    canvas = np.zeros((side, side, 4), dtype=np.uint8)
    y0, x0 = (side - crop.shape[0]) // 2, (side - crop.shape[1]) // 2
    canvas[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
    small = Image.fromarray(canvas, "RGBA").resize((SIDE, SIDE), Image.Resampling.LANCZOS)
    a = np.asarray(small, dtype=np.float32)
    alpha = a[..., 3:] / 255.0
    return np.concatenate([a[..., :3] * alpha, alpha], axis=-1).astype(np.float32)


def _emoji(glyph: str) -> F32:
    _require_pillow()
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(font_path()), FONT_SIZE)
    im = Image.new("RGBA", (160, 160), (0, 0, 0, 0))
    ImageDraw.Draw(im).text((80, 80), glyph, font=font, embedded_color=True, anchor="mm")
    rgba = np.asarray(im)
    if int((rgba[..., 3] > 0).sum()) < 1000:
        raise StreamerError(f"emoji {glyph!r} renders blank in {FONT_FILE}")
    return _square(rgba)


def _photo(name: str) -> F32:
    try:
        import skimage.data
    except ImportError:
        raise PicturesMissing("scikit-image") from None
    img = np.asarray(getattr(skimage.data, name)())
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    h, w = img.shape[:2]
    s = min(h, w)
    img = img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s, :3]
    r = np.minimum(np.arange(s), np.arange(s)[::-1]) / (0.08 * s)  # feathered edge
    alpha = np.clip(np.minimum(r[:, None], r[None, :]), 0, 1) * 255
    return _square(np.concatenate([img, alpha[..., None]], axis=-1).astype(np.uint8))


@lru_cache(maxsize=1)
def sprites() -> tuple[F32, ...]:
    """Every picture of :func:`catalogue` as a sprite (rendered once per process)."""
    out = []
    for p in catalogue():
        kind, what = p.source.split(":", 1)
        sprite = _emoji(what) if kind == "emoji" else _photo(what)
        sprite.setflags(write=False)
        out.append(sprite)
    return tuple(out)
