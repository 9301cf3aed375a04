"""Alignment: one stream's items cut into event-time windows (see DESIGN.md).

Two modules, one concept each:

    windows   pure window arithmetic: starts, covers, video slots, audio samples
    aligner   StreamAligner: buffers, watermarks, lateness, emission
"""

from streamer.align.aligner import AlignerStats, StreamAligner
from streamer.align.windows import cover_starts, first_cover_start, last_cover_start

__all__ = [
    "AlignerStats",
    "StreamAligner",
    "cover_starts",
    "first_cover_start",
    "last_cover_start",
]
