"""Pure window arithmetic on the node clock (integer epoch nanoseconds).

Windows are ``[start, start + length)`` with starts at multiples of ``hop`` in epoch
time, so windows of different streams and nodes line up. Video is cut into slots of
``slot_ns = NS // fps``; audio sample ``i`` sits at ``i * NS / rate``. All divisions are
floor divisions, so times before the epoch (negative) work too.

The grid :func:`check_grid` accepts makes every window start a whole number of video slots
and of audio samples, which lets the aligner decide "is ``t`` in this window" the same way
for a frame, a sample and a text event.
"""

from __future__ import annotations

from streamer.errors import ConfigError
from streamer.frames import NS


def first_cover_start(t_ns: int, length_ns: int, hop_ns: int) -> int:
    """The start of the first window that covers ``t_ns``: the smallest multiple of hop
    greater than ``t_ns - length_ns``."""
    return ((t_ns - length_ns) // hop_ns + 1) * hop_ns


def last_cover_start(t_ns: int, hop_ns: int) -> int:
    """The start of the last window that covers ``t_ns``: the largest multiple of hop <= t."""
    return (t_ns // hop_ns) * hop_ns


def cover_starts(t_ns: int, length_ns: int, hop_ns: int) -> range:
    """The starts of all windows that cover ``t_ns``, in order (``length // hop`` of them)."""
    return range(
        first_cover_start(t_ns, length_ns, hop_ns), last_cover_start(t_ns, hop_ns) + 1, hop_ns
    )


def slot_ns(fps: int) -> int:
    """The length of one video slot."""
    return NS // fps


def slot_index(t_ns: int, slot_len_ns: int) -> int:
    """The video slot ``k`` with ``k * slot_ns <= t < (k + 1) * slot_ns``."""
    return t_ns // slot_len_ns


def frame_rank(t_ns: int, slot_len_ns: int) -> tuple[int, int]:
    """How a frame at ``t_ns`` ranks in its slot, lower wins: twice its distance from the
    slot's centre (an int), then the earlier pts."""
    centre2 = (2 * slot_index(t_ns, slot_len_ns) + 1) * slot_len_ns
    return abs(2 * t_ns - centre2), t_ns


def sample_index(t_ns: int, rate: int) -> int:
    """The audio sample at or before ``t_ns`` (where a chunk starting at ``t_ns`` begins)."""
    return t_ns * rate // NS


def sample_time_ns(i: int, rate: int) -> int:
    """The time of sample ``i``, rounded up to a whole ns (exact on the grid)."""
    return -((-i * NS) // rate)


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
