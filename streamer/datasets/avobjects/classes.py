"""The AV-objects classes: ImageNet-like everyday objects with names espeak-ng says clearly.

Each class has emoji drawings for train and different ones held out for test (so test
pictures are never seen in training), and, for three classes, a real photo from
scikit-image's sample data (train only; all three are CC0 / public domain):
``chelsea`` (a cat, CC0, Stefan van der Walt), ``coffee`` (a cup, CC0, Rachel Michetti),
``clock`` (a wall clock, public domain, Stefan van der Walt).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ObjectClass:
    name: str  # the label, and what espeak-ng says
    train: tuple[str, ...]  # emoji (single code points, no ZWJ sequences)
    test: tuple[str, ...]
    photos: tuple[str, ...] = ()  # skimage.data functions, train only
    synonyms: tuple[str, ...] = ()  # other words for it in text events


CLASSES: tuple[ObjectClass, ...] = (
    ObjectClass("cat", ("🐈", "😺"), ("🐱",), ("chelsea",), ("kitty", "kitten")),
    ObjectClass("dog", ("🐕", "🐩", "🦮"), ("🐶",), (), ("puppy", "doggy")),
    ObjectClass("car", ("🚗", "🚓", "🚕"), ("🚙",), (), ("automobile",)),
    ObjectClass("bird", ("🐦", "🦜", "🕊"), ("🐤",), (), ("birdie",)),
    ObjectClass("fish", ("🐟", "🐡"), ("🐠",), (), ("goldfish",)),
    ObjectClass("flower", ("🌸", "🌻", "🌹"), ("🌺", "🌷"), (), ("blossom",)),
    ObjectClass("cup", ("☕", "🍵"), ("🥤",), ("coffee",), ("mug",)),
    ObjectClass("clock", ("⏰", "🕰"), ("⌚",), ("clock",), ("watch",)),
    ObjectClass("tree", ("🌲", "🌴"), ("🌳",), (), ()),
    ObjectClass("bus", ("🚌", "🚎"), ("🚍",), (), ("coach",)),
    ObjectClass("ball", ("⚽", "🏀", "🎾"), ("⚾", "🏈"), (), ()),
    ObjectClass("phone", ("📱", "📞", "📲"), ("☎",), (), ("telephone",)),
)
NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
