"""Alignment: one stream's items cut into event-time windows (see DESIGN.md).

One concept a module:

    windows   pure window arithmetic: starts, covers, the grid check (the video slots and
              audio samples themselves are streamer.timebase's, shared with the sources)
    samples   SampleBuffer: audio samples held by absolute sample index
    aligner   StreamAligner: buffers, watermarks, lateness, emission
"""

from streamer.align.aligner import AlignerStats, StreamAligner
from streamer.align.windows import first_cover_start, last_cover_start

__all__ = [
    "AlignerStats",
    "StreamAligner",
    "first_cover_start",
    "last_cover_start",
]
