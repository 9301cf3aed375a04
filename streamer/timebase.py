"""The media time grid on the node clock (integer epoch nanoseconds).

Video is cut into slots of ``slot_ns = NS // fps``: slot ``k`` is
``[k * slot_ns, (k + 1) * slot_ns)``, and of several frames in one slot the one nearest
its centre stands for it. Audio sample ``i`` sits at ``i * NS / rate``. All divisions are
floor divisions, so times before the epoch (negative) work too.

Sources (which may thin frames to one a slot) and the aligner (which fills windows slot
by slot and sample by sample) both follow this rule, so it lives here, beside neither.
"""

from __future__ import annotations

from streamer.frames import NS


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
