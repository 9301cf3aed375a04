"""AV-digits: a handwritten digit on video, the spoken word on audio, text that mentions it.

    settings.py   the layout (canvas, rates, segment length) and the difficulty knobs
    plan.py       what one segment holds, derived from (seed, split, segment index) alone
    images.py     sklearn's handwritten digits rendered into moving, corrupted frames
    speech.py     espeak-ng words with voice/speed/pitch variation, mixed into noise
    text.py       sentences that mention the digit, with typos and distractor numbers
    clips.py      one clip: mp4 (H.264 + AAC) and its text events
    generate.py   a whole data set: train/ and test/, labels.csv, meta.json
    live.py       the same content as a function of epoch time, for the live source
    cli.py        ``streamer dataset avdigits``

Every segment is a pure function of ``(seed, split, index)``: the clip generator and the
live source draw the same pictures, samples and sentences for the same segment.
"""

from streamer.datasets.avdigits.generate import Summary, generate
from streamer.datasets.avdigits.live import (
    audio_samples,
    frame_at,
    label_at,
    segment_index,
    text_between,
    text_events,
)
from streamer.datasets.avdigits.settings import Difficulty, Layout

__all__ = [
    "Difficulty",
    "Layout",
    "Summary",
    "audio_samples",
    "frame_at",
    "generate",
    "label_at",
    "segment_index",
    "text_between",
    "text_events",
]
