"""AV-objects: an everyday object on video, its name spoken on audio, text that mentions it.

    classes.py    the classes: their pictures (emoji drawings, photos), names and synonyms
    pictures.py   Noto Color Emoji glyphs and scikit-image photos as RGBA sprites, by split
    plan.py       what one segment holds, from (seed, split, index) alone; the text style
    generate.py   a whole data set: K train clips per class, a fixed test set, meta.json
    cli.py        ``streamer dataset avobjects``

The machinery (moving corrupted pictures, espeak-ng speech in noise, text with
distractors, the clip format) is :mod:`streamer.datasets.common`'s, shared with AV-digits;
each modality is corrupted or missing independently, as there. Test clips use pictures
and voices that no train clip uses.
"""

from streamer.datasets.avobjects.classes import CLASSES, NAMES
from streamer.datasets.avobjects.generate import Summary, generate

__all__ = ["CLASSES", "NAMES", "Summary", "generate"]
