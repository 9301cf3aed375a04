"""streamer/align: window arithmetic and the StreamAligner, with a fake clock, no sleeps."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamer.align import StreamAligner
from streamer.align.samples import SampleBuffer
from streamer.align.windows import check_grid, first_cover_start, last_cover_start
from streamer.errors import ConfigError
from streamer.frames import (
    NS,
    AudioChunk,
    Modality,
    TextEvent,
    VideoFrame,
    Window,
    modality_of,
)
from streamer.testing import FakeClock
from streamer.timebase import sample_index, sample_time_ns, slot_index

MS = NS // 1000
T0 = FakeClock().now_ns()  # a whole number of seconds: a window start for every hop used
HOUR = 3600 * NS
ALL: tuple[Modality, ...] = ("video", "audio", "text")
HALF_SLOT = NS // 8  # half a video slot at the aligner's 4 fps


def cover_starts(t_ns: int, length_ns: int, hop_ns: int) -> range:
    """The starts of all windows that cover ``t_ns``, in order (``length // hop`` of them)."""
    return range(
        first_cover_start(t_ns, length_ns, hop_ns), last_cover_start(t_ns, hop_ns) + 1, hop_ns
    )


def aligner(
    modalities: Iterable[Modality] = ALL,
    *,
    length: int = NS,
    hop: int = NS // 2,
    delay: int = NS // 2,
    rate: int = 16_000,
    cap: float = 30.0,
) -> StreamAligner:
    return StreamAligner(
        "cam1",
        length_ns=length,
        hop_ns=hop,
        max_delay_ns=delay,
        fps=4,
        audio_rate=rate,
        modalities=modalities,
        max_buffer_s=cap,
    )


def frame(t: int, tag: int = 0) -> VideoFrame:
    return VideoFrame("cam1", t, np.full((2, 2, 3), tag % 256, dtype=np.uint8))


def chunk(t: int, seconds: float, value: float = 0.5, rate: int = 16_000) -> AudioChunk:
    n = round(seconds * rate)
    return AudioChunk("cam1", t, np.full(n, value, dtype=np.float32), rate)


def text(t: int, s: str = "hi") -> TextEvent:
    return TextEvent("cam1", t, s)


def feed_until(a: StreamAligner, end: int, mods: Iterable[Modality] = ALL) -> None:
    """Push every modality, in order, from T0 up to ``end`` (frames every 250 ms)."""
    mods = set(mods)
    for t in range(T0, end, NS // 4):
        if "video" in mods:
            a.push(frame(t))
        if "audio" in mods:
            a.push(chunk(t, 0.25))
        if "text" in mods:
            a.push(text(t + 10 * MS, f"at {t - T0}"))


# ------------------------------------------------------------------------- window math


def test_first_cover_start_and_covers() -> None:
    L, H = 2 * NS, NS // 2
    assert first_cover_start(10 * NS, L, H) == 8 * NS + H  # 8.5 s: the first that holds 10 s
    assert first_cover_start(10 * NS + 1, L, H) == 8 * NS + H
    assert first_cover_start(-1, L, H) == -2 * NS  # floor division: negatives work
    assert first_cover_start(-2 * NS, L, H) == -3 * NS - H
    assert last_cover_start(-1, H) == -H
    for t in (-3 * NS - 1, -1, 0, 1, 7 * NS + 123, T0 + 499 * MS):
        starts = cover_starts(t, L, H)
        assert len(starts) == L // H
        assert all(s % H == 0 and s <= t < s + L for s in starts)
        assert starts[0] - H + L <= t  # the one before does not cover t
    assert slot_index(T0 + 250 * MS - 1, NS // 4) == T0 // (NS // 4)
    assert sample_index(-1, 16_000) == -1
    assert sample_time_ns(1, 16_000) == 62_500
    assert sample_time_ns(1, 3) == 333_333_334  # rounded up


@pytest.mark.parametrize(
    ("length", "hop", "fps", "rate", "field"),
    [
        (NS // 3 * 3, NS // 3, 4, 16_000, "window.hop"),  # not a whole video slot
        (NS, NS // 4, 4, 3, "window.hop"),  # not a whole number of samples
        (NS, 2 * NS, 4, 16_000, "window.length"),
        (3 * NS // 2, NS, 4, 16_000, "window.length"),
        (NS, NS // 2, 7, 16_000, "model.fps"),
    ],
)
def test_bad_grid_names_the_field(length: int, hop: int, fps: int, rate: int, field: str) -> None:
    with pytest.raises(ConfigError) as e:
        check_grid(length, hop, fps, rate)
    assert e.value.field == field


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError):
        aligner(cap=0.5)  # a buffer shorter than a window
    with pytest.raises(ConfigError):
        aligner(())
    a = aligner(("video",))
    with pytest.raises(ValueError, match="not configured"):
        a.push(text(T0))
    with pytest.raises(ValueError, match="not configured"):
        a.heartbeat("audio", T0)
    with pytest.raises(ValueError, match="stream"):
        a.push(VideoFrame("other", T0, np.zeros((2, 2, 3), np.uint8)))
    b = aligner(("audio",))
    with pytest.raises(ValueError, match="Hz"):
        b.push(chunk(T0, 0.1, rate=8_000))


# ------------------------------------------------------------------------ emission rule


def test_all_live_in_order_emits_when_the_last_watermark_passes() -> None:
    clock = FakeClock(T0 + 600 * MS)  # before any window's deadline: only watermarks count
    a = aligner()
    assert a.poll(clock.now_ns()) == [] and a.next_deadline_ns() is None
    a.push(frame(T0, 1))
    a.push(frame(T0 + 250 * MS, 2))
    a.push(chunk(T0, 0.5, 0.25))
    a.push(text(T0 + 100 * MS, "one"))
    # The first window is the first that covers the first item: [T0 - 0.5 s, T0 + 0.5 s).
    assert a.next_start_ns == T0 - NS // 2
    assert a.next_deadline_ns() == T0 + NS  # its end + max_delay
    assert a.poll(clock.now_ns()) == []
    a.push(frame(T0 + 500 * MS, 3))
    assert a.poll(clock.now_ns()) == []  # text is still at T0 + 0.1 s
    a.push(text(T0 + 500 * MS, "two"))  # the last watermark passes the end
    (w,) = a.poll(clock.now_ns())
    assert (w.start_ns, w.end_ns, w.stream) == (T0 - NS // 2, T0 + NS // 2, "cam1")
    assert dict(w.present) == {"video": True, "audio": True, "text": True}
    assert [f.pts_ns - T0 if f else None for f in w.video] == [None, None, 0, 250 * MS]
    assert w.audio.shape == w.audio_mask.shape == (16_000,)
    assert w.audio.dtype == np.float32 and w.audio_mask.dtype == np.bool_
    assert not w.audio_mask[:8000].any() and w.audio_mask[8000:].all()
    assert np.all(w.audio[8000:] == 0.25) and np.all(w.audio[:8000] == 0)
    assert [e.text for e in w.texts] == ["one"]
    assert w.audio_seconds == 0.5 and w.frames == 2
    assert a.stats.windows == 1 and a.poll(clock.now_ns()) == []


def test_video_settles_at_the_centre_of_the_last_slot() -> None:
    """A frame at or past the last slot's centre makes a window's video final: frames come
    in pts order and a later one is farther from that centre. A heartbeat gives no lead."""
    clock = FakeClock(T0)  # before any deadline
    a = aligner(("video",))
    for ms in (0, 100, 200, 300):  # 10 fps; window [T0 - .5, T0 + .5), last slot centre .375
        a.push(frame(T0 + ms * MS, ms))
    assert a.poll(clock.now_ns()) == []  # 300 ms is before the centre: 400 could be nearer
    a.push(frame(T0 + 400 * MS, 400))  # 25 ms past the centre, 100 ms before the end
    (w,) = a.poll(clock.now_ns())
    assert w.end_ns == T0 + NS // 2
    assert [f.pts_ns - T0 if f else None for f in w.video] == [None, None, 100 * MS, 400 * MS]
    # the same content as waiting for a frame past the end
    b = aligner(("video",))
    for ms in (0, 100, 200, 300, 400, 500):
        b.push(frame(T0 + ms * MS, ms))
    (v,) = b.poll(clock.now_ns())
    assert [f.pts_ns if f else None for f in v.video] == [f.pts_ns if f else None for f in w.video]
    # a heartbeat is no frame: one may still follow it into the slot
    c = aligner(("video",))
    c.push(frame(T0, 0))
    c.heartbeat("video", T0 + 400 * MS)
    assert c.poll(clock.now_ns()) == []
    c.heartbeat("video", T0 + NS // 2)
    assert [x.end_ns for x in c.poll(clock.now_ns())] == [T0 + NS // 2]


def test_a_silent_modality_is_absent_after_max_delay_and_its_data_late() -> None:
    clock = FakeClock(T0)
    a = aligner()
    feed_until(a, T0 + 2 * NS, ("video", "audio"))
    deadline = T0 + NS // 2 + NS // 2  # first window [T0 - .5, T0 + .5) ends + max_delay
    assert a.next_deadline_ns() == deadline
    clock.set(deadline - 1)
    assert a.poll(clock.now_ns()) == []
    clock.set(deadline)
    (w,) = a.poll(clock.now_ns())
    assert w.start_ns == T0 - NS // 2
    assert dict(w.present) == {"video": True, "audio": True, "text": False}
    assert a.next_deadline_ns() == deadline + NS // 2
    # Text for the emitted window is late; text only later windows cover is on time.
    assert a.push(text(T0 + 200 * MS)) is False
    assert a.stats.late["text"] == 1
    assert a.push(text(T0 + 600 * MS)) is True
    clock.set(deadline + NS // 2)
    (w2,) = a.poll(clock.now_ns())
    assert w2.start_ns == T0 and [e.pts_ns for e in w2.texts] == [T0 + 600 * MS]


def test_a_modality_just_after_the_deadline_is_late_sample_by_sample() -> None:
    clock = FakeClock(T0)
    a = aligner(("video", "audio"))
    feed_until(a, T0 + 2 * NS, ("video",))
    a.push(chunk(T0, 0.25, 0.1))  # before the deadline: counted in
    clock.set(T0 + NS)  # the deadline of [T0 - .5, T0 + .5)
    (w,) = a.poll(clock.now_ns())
    assert w.start_ns == T0 - NS // 2 and w.present["audio"]
    assert w.audio_mask[8000:12000].all() and w.audio_mask.sum() == 4000
    # One ms after the deadline, a chunk [T0 + .25, T0 + 1.25) arrives: its first quarter
    # second is in the emitted window, so those samples are late and dropped; the rest is
    # kept.
    clock.set(T0 + NS + MS)
    assert a.push(chunk(T0 + NS // 4, 1.0, 0.7)) is True
    assert a.stats.late == {"video": 0, "audio": 4000, "text": 0}
    (w2,) = a.poll(clock.now_ns())  # audio watermark at T0 + 1.25 s, video at 1.75 s
    assert w2.start_ns == T0
    assert w2.audio_mask[:4000].all() and np.all(w2.audio[:4000] == np.float32(0.1))
    assert not w2.audio_mask[4000:8000].any() and np.all(w2.audio[4000:8000] == 0)
    assert w2.audio_mask[8000:].all() and np.all(w2.audio[8000:] == np.float32(0.7))
    assert a.push(chunk(T0, 0.25)) is False  # all of it late
    assert a.stats.late["audio"] == 4000 + 4000


def test_an_ended_source_stops_gating_and_done_after_flush() -> None:
    clock = FakeClock(T0 + 100 * MS)
    a = aligner(("video", "text"))
    feed_until(a, T0 + NS, ("video",))
    assert a.poll(clock.now_ns()) == []  # waits for text
    a.end("text")
    ws = a.poll(clock.now_ns())
    assert [w.start_ns - T0 for w in ws] == [-NS // 2]  # video watermark at T0 + 0.75 s
    assert not a.done
    a.end("video")
    assert not a.done  # data left
    rest = a.flush()
    assert [w.start_ns - T0 for w in rest] == [0, NS // 2]
    assert a.done and a.flush() == [] and a.next_deadline_ns() is None


def test_a_stop_cuts_the_windows_not_ready_yet_and_marks_them_partial() -> None:
    a = aligner()
    feed_until(a, T0 + 2 * NS)  # every modality up to T0 + 2 s
    stop = T0 + 2 * NS + 100 * MS
    ready = a.poll(stop)
    assert ready and not any(w.partial for w in ready)
    rest = a.flush(stop)
    assert [w.start_ns - T0 for w in rest] == [NS, NS + NS // 2]  # not settled at the stop
    assert all(w.partial and w.cut_ns == stop for w in rest)


def test_windows_running_past_the_end_of_the_data_are_cut_there() -> None:
    a = aligner(("video", "audio"))
    feed_until(a, T0 + 2 * NS, ("video", "audio"))
    a.end("video")
    a.end("audio")
    ws = a.poll(T0)  # everything ended: all of it, whatever the clock says
    whole = [w for w in ws if w.end_ns <= T0 + 2 * NS]
    cut = [w for w in ws if w.end_ns > T0 + 2 * NS]
    assert whole and not any(w.partial for w in whole)
    assert cut and all(w.cut_ns == T0 + 2 * NS for w in cut)  # the audio's end


def test_end_releases_every_window_even_without_flush() -> None:
    a = aligner(("text",))
    a.push(text(T0))
    a.end("text")
    assert [w.start_ns for w in a.poll(T0)] == [T0 - NS // 2, T0]
    assert a.done


def test_heartbeat_advances_an_idle_text_modality() -> None:
    clock = FakeClock(T0)
    a = aligner()
    feed_until(a, T0 + NS, ("video", "audio"))
    assert a.poll(clock.now_ns()) == []
    a.heartbeat("text", T0 + NS // 2)
    (w,) = a.poll(clock.now_ns())
    assert w.start_ns == T0 - NS // 2 and not w.present["text"]
    a.heartbeat("text", T0)  # never lowers
    assert a.watermark_ns("text") == T0 + NS // 2
    a.heartbeat("text", T0 + NS)
    assert [w.start_ns for w in a.poll(clock.now_ns())] == []  # video is at T0 + .75 s
    a.push(frame(T0 + NS))
    assert [w.start_ns for w in a.poll(clock.now_ns())] == [T0]


def test_a_non_live_modality_does_not_gate_but_contributes() -> None:
    clock = FakeClock(T0)
    a = aligner()
    a.set_live("text", False)
    a.push(text(T0 + 100 * MS, "on time"))
    feed_until(a, T0 + NS, ("video", "audio"))
    (w,) = a.poll(clock.now_ns())
    assert w.present["text"] and [e.text for e in w.texts] == ["on time"]
    assert a.push(text(T0 + 200 * MS)) is False  # its window has gone: late
    a.set_live("text", True)  # gates again, with no watermark past T0 + 0.1 s
    assert a.poll(clock.now_ns()) == []


def test_no_live_modality_waits_for_the_deadline() -> None:
    a = aligner(("text",))
    a.set_live("text", False)
    a.push(text(T0))
    assert a.poll(T0 + NS - 1) == []
    assert [w.start_ns for w in a.poll(T0 + NS)] == [T0 - NS // 2]


def test_unconfigured_modalities_are_never_present() -> None:
    a = aligner(("video",))
    a.push(frame(T0))
    a.end("video")
    (w, _) = a.poll(T0)
    assert dict(w.present) == {"video": True, "audio": False, "text": False}
    assert not w.audio_mask.any() and w.texts == ()


# ---------------------------------------------------------------- jumps and emptiness


@pytest.mark.timeout(5)
def test_a_forward_jump_of_hours_skips_empty_windows_at_once() -> None:
    clock = FakeClock(T0)
    a = aligner(length=2 * NS, hop=NS // 4)
    feed_until(a, T0 + 2 * NS)
    clock.set(T0 + 2 * NS)
    before = a.poll(clock.now_ns())
    assert before and all(any(w.present.values()) for w in before)
    jump = T0 + 5 * HOUR
    clock.set(jump)
    old = a.poll(clock.now_ns())  # the rest of the old data times out
    assert all(any(w.present.values()) for w in old)
    assert a.next_deadline_ns() is None
    for t in range(jump, jump + 2 * NS, NS // 4):
        a.push(frame(t))
        a.push(chunk(t, 0.25))
        a.push(text(t))
    clock.set(jump + 2 * NS)
    new = a.poll(clock.now_ns())
    assert new and all(w.start_ns >= jump - 2 * NS for w in new)
    assert all(any(w.present.values()) for w in new)
    assert a.stats.empty_skipped > 4 * HOUR // (NS // 4)  # counted, never built
    assert a.stats.late == {"video": 0, "audio": 0, "text": 0}
    starts = [w.start_ns for w in before + old + new]
    assert starts == sorted(set(starts))
    # ...and backwards: old timestamps are late.
    assert a.push(frame(T0 + NS)) is False
    assert a.push(text(T0 + HOUR)) is False
    assert a.push(chunk(T0 + 3 * NS, 0.1)) is False
    assert a.stats.late == {"video": 1, "audio": 1600, "text": 1}


@pytest.mark.timeout(5)
def test_a_pts_jump_with_all_modalities_alive_skips_the_gap_between_data() -> None:
    # No timeouts (the clock stands still): watermarks alone drive emission across a gap.
    a = aligner(("video", "text"))
    a.push(frame(T0))
    a.push(text(T0))
    later = T0 + 3 * HOUR
    a.push(frame(later))
    a.push(text(later))
    ws = a.poll(T0)
    assert [w.start_ns - T0 for w in ws] == [-NS // 2, 0]
    assert a.stats.empty_skipped == (later - NS // 2 - (T0 + NS // 2)) // (NS // 2)
    assert a.next_start_ns == later - NS // 2
    a.end("video")
    a.end("text")
    assert [w.start_ns - later for w in a.poll(T0)] == [-NS // 2, 0]


def test_empty_ready_windows_are_skipped_not_emitted() -> None:
    a = aligner(("text",), length=2 * NS, hop=NS // 2)
    a.push(text(T0))
    ws = a.poll(T0 + 10 * NS)
    assert [w.start_ns - T0 for w in ws] == [-3 * NS // 2, -NS, -NS // 2, 0]
    # Nothing buffered: every window ending by now - max_delay is skipped at once.
    assert a.next_start_ns == T0 + 8 * NS and a.stats.empty_skipped == 15
    assert a.push(text(T0 + 20 * NS)) is True  # not covered by a skipped window
    assert a.push(text(T0 + 9 * NS)) is False  # covered by one: late
    ws = a.poll(T0 + 30 * NS)
    assert [w.start_ns - T0 for w in ws] == [18_500 * MS, 19 * NS, 19_500 * MS, 20 * NS]
    assert a.next_start_ns == T0 + 28 * NS
    assert a.stats.empty_skipped == (28 * NS - NS // 2) // (NS // 2) - 4
    assert a.stats.windows == 8


# ----------------------------------------------------------------- order and sampling


def test_out_of_order_video_and_text_give_the_same_windows() -> None:
    offsets = [0, 30, 120, 130, 240, 260, 400, 620, 750, 990, 1100, 1380]
    items: list[VideoFrame | TextEvent] = []
    for i, ms in enumerate(offsets):
        items.append(frame(T0 + ms * MS, i))
        items.append(text(T0 + ms * MS + 1, f"e{i}"))

    def run(order: list[VideoFrame | TextEvent]) -> list[Window]:
        a = aligner(("video", "text"))
        for item in order:
            assert a.push(item)
        return a.poll(T0 + 3 * NS) + a.flush()

    in_order = run(items)
    shuffled = items[:]
    random.Random(7).shuffle(shuffled)
    for other in (run(items[::-1]), run(shuffled)):
        assert [w.start_ns for w in other] == [w.start_ns for w in in_order]
        assert [w.video for w in other] == [w.video for w in in_order]
        assert [w.texts for w in other] == [w.texts for w in in_order]
    w0 = in_order[0]  # [T0 - .5, T0 + .5)
    # Slot [0, 250 ms) has frames at 0, 30, 120, 130, 240: 120 and 130 tie for the centre
    # (125 ms); the earlier wins. Slot [250, 500) keeps 400 (nearest 375).
    assert [f.pts_ns - T0 if f else None for f in w0.video] == [None, None, 120 * MS, 400 * MS]
    assert [e.text for e in w0.texts] == ["e0", "e1", "e2", "e3", "e4", "e5", "e6"]
    w1 = in_order[1]  # [T0, T0 + 1): slot k's frame is the same as in w0
    assert w1.video[0] is w0.video[2] and w1.video[1] is w0.video[3]


def test_equal_text_timestamps_keep_arrival_order() -> None:
    a = aligner(("text",))
    for s in ("a", "b", "c"):
        a.push(text(T0 + 5, s))
    a.push(text(T0 + 1, "first"))
    a.end("text")
    assert [e.text for e in a.poll(T0)[0].texts] == ["first", "a", "b", "c"]


def test_an_audio_gap_is_zero_filled_and_masked() -> None:
    a = aligner(("audio",), length=NS, hop=NS // 2)
    a.push(chunk(T0, 0.25, 0.5))
    a.push(chunk(T0 + NS // 2, 0.5, -0.5))
    a.end("audio")
    w = next(w for w in a.poll(T0) if w.start_ns == T0)
    assert w.audio_mask[:4000].all() and np.all(w.audio[:4000] == 0.5)
    assert not w.audio_mask[4000:8000].any() and np.all(w.audio[4000:8000] == 0)
    assert w.audio_mask[8000:].all() and np.all(w.audio[8000:] == -0.5)
    assert w.audio_seconds == 0.75


def test_duplicate_audio_samples_last_write_wins() -> None:
    a = aligner(("audio",))
    a.push(chunk(T0, 0.5, 0.1))
    a.push(chunk(T0 + NS // 4, 0.5, 0.9))  # overlaps [T0 + .25, T0 + .5)
    a.end("audio")
    w = next(w for w in a.poll(T0) if w.start_ns == T0)
    assert np.all(w.audio[:4000] == np.float32(0.1))
    assert np.all(w.audio[4000:12000] == np.float32(0.9))
    assert w.audio_mask[:12000].all() and not w.audio_mask[12000:].any()


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("write"), st.integers(0, 60), st.integers(0, 25)),
            st.tuples(st.just("evict"), st.integers(0, 60), st.just(0)),
        ),
        max_size=20,
    )
)
def test_sample_buffer_matches_a_dense_reference(ops: list[tuple[str, int, int]]) -> None:
    buf, ref = SampleBuffer(), dict[int, float]()
    for n, (op, i, length) in enumerate(ops):
        if op == "write":
            values = np.arange(length, dtype=np.float32) + 100 * n  # this write's values
            buf.write(i, values)
            ref.update({i + j: float(v) for j, v in enumerate(values)})
        else:
            gone = [k for k in ref if k < i]
            assert buf.evict_before(i) == len(gone)
            for k in gone:
                del ref[k]
        assert len(buf) == len(ref)
        assert buf.first() == (min(ref) if ref else None)
        for lo, hi in ((-5, 100), (7, 31), (40, 41)):
            out, mask = buf.read(lo, hi)  # out[j] is sample lo + j
            got = {lo + j: float(out[j]) for j in np.flatnonzero(mask).tolist()}
            assert got == {k: v for k, v in ref.items() if lo <= k < hi}
            assert np.all(out[~mask] == 0)
        assert [buf.nth(j) for j in range(len(ref))] == sorted(ref)
        assert buf.any_in(10, 20) == any(10 <= k < 20 for k in ref)


def test_audio_off_the_sample_grid_is_placed_at_the_sample_before() -> None:
    a = aligner(("audio",), rate=100)
    a.push(AudioChunk("cam1", T0 + 15 * MS, np.arange(3, dtype=np.float32), 100))
    a.end("audio")
    w = next(w for w in a.poll(T0) if w.start_ns == T0)
    assert list(np.flatnonzero(w.audio_mask)) == [1, 2, 3]  # 10 ms per sample
    assert list(w.audio[1:4]) == [0.0, 1.0, 2.0]


def test_window_arrays_do_not_alias_the_buffers() -> None:
    a = aligner(("audio",))
    a.push(chunk(T0, 1.0, 0.5))
    a.end("audio")
    w1, w2, w3 = a.poll(T0)
    assert w1.start_ns == T0 - NS // 2 and w2.start_ns == T0
    w1.audio[:] = 9.0
    w1.audio_mask[:] = False
    assert np.all(w2.audio[:8000] == 0.5) and w2.audio_mask.all()
    assert not np.shares_memory(w2.audio, w3.audio)


def test_first_window_moves_back_for_an_earlier_first_item() -> None:
    a = aligner(("video", "audio"))
    a.push(frame(T0 + NS))
    assert a.next_start_ns == T0 + NS // 2
    assert a.push(chunk(T0 - NS // 4, 0.5)) is True  # nothing emitted yet: not late
    assert a.next_start_ns == T0 - NS  # the first window that covers T0 - .25 s
    a.end("video")
    a.end("audio")
    ws = a.poll(T0)
    assert ws[0].start_ns == T0 - NS and ws[0].audio_mask.sum() == 4000
    assert a.stats.late == {"video": 0, "audio": 0, "text": 0}


# ------------------------------------------------------------------------------- caps


def test_the_cap_drops_the_oldest_and_counts_it() -> None:
    a = aligner(("video", "text"), cap=3.0)  # text live and silent: nothing can emit
    for i in range(20):  # 5 s of video at 4 fps; the cap holds 3 s worth: 12 frames
        assert a.push(frame(T0 + i * NS // 4, i))
    # Each overflow gave up the windows of the oldest frame: next start past it, the frames
    # before the new next start dropped and counted.
    assert a.next_start_ns == T0 + 2 * NS
    assert a.stats.dropped == {"video": 8, "audio": 0, "text": 0}
    assert a.push(frame(T0 + NS)) is False and a.stats.late["video"] == 1
    ws = a.flush()
    assert ws[0].start_ns == T0 + 2 * NS and ws[0].video[0] is not None
    assert ws[0].video[0].pts_ns == T0 + 2 * NS


def test_the_cap_trims_a_long_audio_chunk() -> None:
    a = aligner(("audio",), cap=3.0)
    assert a.push(chunk(T0, 5.0, 0.5))
    assert a.stats.dropped["audio"] == 2 * 16_000  # 3 s kept: [T0 + 2 s, T0 + 5 s)
    assert a.next_start_ns == T0 + 2 * NS
    a.end("audio")
    ws = a.poll(T0)
    assert [w.start_ns - T0 for w in ws] == [n * NS // 2 for n in range(4, 10)]
    assert ws[0].audio_mask.all() and not ws[-1].audio_mask[8000:].any()


def test_one_far_future_item_does_not_push_out_older_data() -> None:
    a = aligner(("video", "text"), cap=3.0)
    a.push(frame(T0))
    a.push(text(T0 + 5 * HOUR, "clock gone wrong"))
    a.push(frame(T0 + NS // 4))
    assert a.stats.dropped == {"video": 0, "audio": 0, "text": 0}
    ws = a.poll(T0 + 2 * NS)  # the first windows time out with their frames
    assert [(w.start_ns - T0, w.frames) for w in ws] == [(-NS // 2, 2), (0, 2)]
    assert [w.texts[0].text for w in a.flush()] == ["clock gone wrong"] * 2


def test_the_text_count_cap_drops_the_oldest_event() -> None:
    a = aligner(("text",), cap=1.0)  # 100 events at most
    for i in range(100):
        assert a.push(text(T0 + i * MS, str(i)))
    assert a.push(text(T0 - MS + 1, "oldest")) is False  # it is the one dropped
    assert a.push(text(T0 + 500 * MS, "new")) is True
    assert a.stats.dropped["text"] == 2
    a.end("text")
    texts = {e.text for w in a.poll(T0) for e in w.texts}
    assert "0" not in texts and "1" in texts and "new" in texts and "oldest" not in texts


def test_deadline_tracks_the_first_window_with_data() -> None:
    a = aligner(("video", "text"))
    a.push(text(T0))
    assert a.next_deadline_ns() == T0 + NS
    a.poll(T0 + NS)
    assert a.next_deadline_ns() == T0 + 3 * NS // 2
    a.poll(T0 + 3 * NS // 2)
    assert a.next_deadline_ns() is None
    a.push(text(T0 + HOUR))
    assert a.next_deadline_ns() == T0 + HOUR + NS


# ------------------------------------------------------------------------- properties

HORIZON_MS = 3000
RATE = 100  # a low audio rate keeps the sample-by-sample bookkeeping small


@dataclass(frozen=True)
class Scenario:
    frames: list[int]  # pts offsets, 0.1 ms units
    texts: list[int]
    chunks: list[tuple[int, int]]  # (first sample, samples): disjoint
    hop: int
    length: int
    delay: int
    live: dict[Modality, bool]
    heartbeats: bool
    seed: int
    steps: list[int]  # clock advances between pushes, ms
    poll_every: int


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    # Non-overlapping audio chunks: alternating gaps and lengths, in samples.
    spans = draw(st.lists(st.tuples(st.integers(0, 40), st.integers(1, 60)), max_size=8))
    chunks: list[tuple[int, int]] = []
    i = 0
    for gap, n in spans:
        i += gap
        chunks.append((i, n))
        i += n
    hop = draw(st.sampled_from([NS // 4, NS // 2]))
    return Scenario(
        frames=draw(st.lists(st.integers(0, HORIZON_MS * 10), max_size=25)),
        texts=draw(st.lists(st.integers(0, HORIZON_MS * 10), max_size=15)),
        chunks=chunks,
        hop=hop,
        length=hop * draw(st.integers(1, 4)),
        delay=draw(st.sampled_from([0, 100 * MS, 400 * MS])),
        live={m: draw(st.booleans()) for m in ALL},
        heartbeats=draw(st.booleans()),
        seed=draw(st.integers(0, 2**32 - 1)),
        steps=draw(st.lists(st.integers(0, 400), min_size=60, max_size=60)),
        poll_every=draw(st.integers(1, 4)),
    )


def build_items(sc: Scenario) -> list[VideoFrame | AudioChunk | TextEvent]:
    items: list[VideoFrame | AudioChunk | TextEvent] = []
    for n, u in enumerate(sc.frames):
        items.append(frame(T0 + u * NS // 10_000, n))
    for n, u in enumerate(sc.texts):
        items.append(text(T0 + u * NS // 10_000, f"t{n}"))
    for i, n in sc.chunks:
        values = (np.arange(i, i + n) + 1).astype(np.float32)  # sample i holds i + 1
        items.append(AudioChunk("cam1", T0 + i * NS // RATE, values, RATE))
    return items


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_property_every_item_in_all_its_windows_or_late(sc: Scenario) -> None:
    L, H = sc.length, sc.hop
    a = aligner(length=L, hop=H, delay=sc.delay, rate=RATE)
    for m, live in sc.live.items():
        a.set_live(m, live)
    items = build_items(sc)
    random.Random(sc.seed).shuffle(items)
    clock = FakeClock(T0)
    windows: list[Window] = []
    accepted: dict[int, bool] = {}
    late_audio = 0  # samples a window passed before they arrived: exactly those are late
    marks: dict[Modality, int] = {}  # the watermarks, as the contract defines them
    for n, item in enumerate(items):
        passed = a.next_start_ns if a.stats.windows or a.stats.empty_skipped else None
        accepted[id(item)] = a.push(item)
        if isinstance(item, AudioChunk):
            i0 = sample_index(item.pts_ns, RATE)
            bound = i0 if passed is None else sample_index(passed + L - H, RATE)
            late = min(max(bound - i0, 0), len(item.samples))
            late_audio += late
            assert accepted[id(item)] == (late < len(item.samples))
        else:
            on_time = passed is None or first_cover_start(item.pts_ns, L, H) >= passed
            assert accepted[id(item)] == on_time
        mark = item.end_ns if isinstance(item, AudioChunk) else item.pts_ns
        if isinstance(item, VideoFrame):  # its window's video is final half a slot ahead
            mark += HALF_SLOT
        marks[modality_of(item)] = max(marks.get(modality_of(item), mark), mark)
        clock.advance(sc.steps[n % len(sc.steps)] / 1000)
        if sc.heartbeats:  # every modality alive up to a little before now
            beat = clock.now_ns() - 300 * MS
            for m in ALL:
                a.heartbeat(m, beat)
                marks[m] = max(marks.get(m, beat), beat)
        if n % sc.poll_every == 0:
            # Ready: every live modality settled >= end, or now >= end + max_delay.
            front = clock.now_ns() - sc.delay
            gating = [m for m in ALL if sc.live[m]]
            if gating and all(m in marks for m in gating):
                front = max(front, min(marks[m] for m in gating))
            before = a.next_start_ns
            ready = a.poll(clock.now_ns())
            assert all(w.end_ns <= front for w in ready)  # none too early...
            if before is not None:  # ...and none left waiting: the next one is not ready
                assert a.next_start_ns == max(before, first_cover_start(front, L, H))
            windows += ready
    windows += a.flush()

    # Starts: hop multiples, strictly increasing; no empty window.
    starts = [w.start_ns for w in windows]
    assert all(s % H == 0 for s in starts) and starts == sorted(set(starts))
    assert all(w.end_ns == w.start_ns + L for w in windows)
    assert all(any(w.present.values()) for w in windows)
    by_start = {w.start_ns: w for w in windows}
    assert a.stats.dropped == {"video": 0, "audio": 0, "text": 0}

    # Text: in exactly the windows that cover it, all of them, or counted late.
    texts = [e for e in items if isinstance(e, TextEvent)]
    for e in texts:
        holding = {w.start_ns for w in windows if any(x is e for x in w.texts)}
        want = set(cover_starts(e.pts_ns, L, H)) if accepted[id(e)] else set()
        assert holding == want, e
    assert a.stats.late["text"] == sum(not accepted[id(e)] for e in texts)
    for w in windows:
        assert [e.pts_ns for e in w.texts] == sorted(e.pts_ns for e in w.texts)
        assert w.present["text"] == bool(w.texts)

    # Audio, sample by sample (sample i holds i + 1 and is written once).
    written: dict[int, float] = {}
    for c in (c for c in items if isinstance(c, AudioChunk)):
        i0 = sample_index(c.pts_ns, RATE)
        written.update({i0 + j: float(v) for j, v in enumerate(c.samples)})
    seen: dict[int, set[int]] = {}
    for w in windows:
        s0 = sample_index(w.start_ns, RATE)
        assert w.present["audio"] == bool(w.audio_mask.any())
        assert np.all(w.audio[~w.audio_mask] == 0)
        for pos in np.flatnonzero(w.audio_mask).tolist():
            i = s0 + pos
            assert written.get(i) == float(w.audio[pos]), (i, w.start_ns)
            seen.setdefault(i, set()).add(w.start_ns)
    late_samples = 0
    for i in written:
        holding = seen.get(i, set())
        if holding:
            assert holding == set(cover_starts(sample_time_ns(i, RATE), L, H)), i
        else:
            late_samples += 1
    assert a.stats.late["audio"] == late_samples == late_audio

    # Video: a slot is filled iff an accepted frame lies in it, with the best such frame,
    # and every window that holds the slot was emitted.
    slot = NS // 4
    best: dict[int, VideoFrame] = {}
    frames = [f for f in items if isinstance(f, VideoFrame)]
    for f in frames:
        if accepted[id(f)]:
            k = f.pts_ns // slot
            centre2 = (2 * k + 1) * slot
            cur = best.get(k)
            if cur is None or (abs(2 * f.pts_ns - centre2), f.pts_ns) < (
                abs(2 * cur.pts_ns - centre2),
                cur.pts_ns,
            ):
                best[k] = f
    assert a.stats.late["video"] == sum(not accepted[id(f)] for f in frames)
    for w in windows:
        k0 = w.start_ns // slot
        assert len(w.video) == L // slot
        for j, got in enumerate(w.video):
            assert got is best.get(k0 + j), (w.start_ns, j)
        assert w.present["video"] == any(f is not None for f in w.video)
    for k in best:
        assert all(s in by_start for s in cover_starts(k * slot, L, H)), k


@settings(max_examples=60, deadline=None)
@given(scenarios())
def test_property_arrival_order_does_not_matter_before_emission(sc: Scenario) -> None:
    """Everything pushed before any poll: the shuffled order gives the in-order windows."""
    items = build_items(sc)
    # Equal timestamps are ordered by arrival (text) or first arrival (video): keep one.
    unique: dict[tuple[type, int], VideoFrame | AudioChunk | TextEvent] = {}
    for item in items:
        unique.setdefault((type(item), item.pts_ns), item)
    items = sorted(unique.values(), key=lambda x: x.pts_ns)
    shuffled = items[:]
    random.Random(sc.seed).shuffle(shuffled)

    def run(order: list[VideoFrame | AudioChunk | TextEvent]) -> list[Window]:
        a = aligner(rate=RATE, length=sc.length, hop=sc.hop)
        for item in order:
            assert a.push(item)
        return a.flush()

    x, y = run(items), run(shuffled)
    assert [w.start_ns for w in x] == [w.start_ns for w in y]
    for u, v in zip(x, y, strict=True):
        assert u.video == v.video and u.texts == v.texts
        assert np.array_equal(u.audio, v.audio) and np.array_equal(u.audio_mask, v.audio_mask)
        assert dict(u.present) == dict(v.present)
