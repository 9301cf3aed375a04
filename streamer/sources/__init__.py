"""Capture sources: files, network streams, cameras, microphones, synthetic signals.

Each source is a :class:`Source`: ``await open()``, then ``await recv()`` until
``SourceEnded``; items are converted once here to the model's size and rate and stamped
on the node clock. :func:`open_sources` builds the sources of one configured stream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamer.sources.base import Source
    from streamer.sources.factory import make_source, open_sources

__all__ = ["Source", "make_source", "open_sources"]


def __getattr__(name: str) -> Any:
    """The factory on first use: a capture process imports one source module
    (``streamer.sources.av``), not the config, WebRTC and microphone modules it needs not."""
    if name == "Source":
        from streamer.sources.base import Source

        return Source
    if name in ("make_source", "open_sources"):
        from streamer.sources import factory

        return getattr(factory, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
