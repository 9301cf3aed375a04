"""Pure window arithmetic on the node clock (integer epoch nanoseconds).

Windows are ``[start, start + length)`` with starts at multiples of ``hop`` in epoch
time, so windows of different streams and nodes line up. All divisions are floor
divisions, so times before the epoch (negative) work too. The video slots and audio
samples windows are cut into are :mod:`streamer.timebase`'s.

The grid :func:`check_grid` accepts makes every window start a whole number of video slots
and of audio samples, which lets the aligner decide "is ``t`` in this window" the same way
for a frame, a sample and a text event.
"""

from __future__ import annotations

from streamer.errors import ConfigError
from streamer.frames import NS
from streamer.timebase import slot_ns


def first_cover_start(t_ns: int, length_ns: int, hop_ns: int) -> int:
    """The start of the first window that covers ``t_ns``: the smallest multiple of hop
    greater than ``t_ns - length_ns``."""
    return ((t_ns - length_ns) // hop_ns + 1) * hop_ns


def last_cover_start(t_ns: int, hop_ns: int) -> int:
    """The start of the last window that covers ``t_ns``: the largest multiple of hop <= t."""
    return (t_ns // hop_ns) * hop_ns


def check_grid(length_ns: int, hop_ns: int, fps: int, audio_rate: int) -> None:
    """Raise :class:`ConfigError` unless windows line up with video slots and audio samples."""
    if fps <= 0 or NS % fps:
        raise ConfigError("model.fps", f"{fps} does not divide one second into whole ns")
    if audio_rate <= 0:
        raise ConfigError("model.audio_rate", f"must be positive, not {audio_rate}")
    if hop_ns <= 0:
        raise ConfigError("window.hop", "must be positive")
    if length_ns < hop_ns or length_ns % hop_ns:
        raise ConfigError("window.length", "must be a whole multiple of window.hop")
    if hop_ns % slot_ns(fps):
        raise ConfigError(
            "window.hop", f"{hop_ns / NS:g} s is not a multiple of the video slot (1/{fps} s)"
        )
    if hop_ns * audio_rate % NS:
        raise ConfigError(
            "window.hop", f"{hop_ns / NS:g} s is not a whole number of samples at {audio_rate} Hz"
        )
