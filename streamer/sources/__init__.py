"""Capture sources: files, network streams, cameras, microphones, synthetic signals.

Each source is a :class:`Source`: ``await open()``, then ``await recv()`` until
``SourceEnded``; items are converted once here to the model's size and rate and stamped
on the node clock. :func:`open_sources` builds the sources of one configured stream.
"""

from streamer.sources.base import Source
from streamer.sources.factory import make_source, open_sources

__all__ = ["Source", "make_source", "open_sources"]
