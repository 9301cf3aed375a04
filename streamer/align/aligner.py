"""The aligner: one stream's video, audio and text cut into event-time windows.

Pure, synchronous and clock-injected: the caller pushes items, raises watermarks and asks
:meth:`StreamAligner.poll` with the current node time which windows are ready. Nothing
here sleeps, reads a clock or does I/O.

Terms (all times are epoch ns on the node clock)::

    window        [start, start + length), start a multiple of hop
    next start    the start of the next window to emit; every earlier window is passed
    watermark     per modality, how far its data has certainly arrived: video the newest
                  frame pts, audio the newest chunk end, text the newest event pts, each
                  also raised by heartbeat(); never lowered; an ended modality's is +inf
    settled       per modality, how far a window's share of it is final: the watermark, but
                  for video the newest frame pts + half a slot (see below)
    gating        the live, not ended modalities: a window waits for them to settle
    ready         every gating modality settled >= end, or now >= end + max_delay
    late          an item a passed window covers: first_cover_start(t) < next start
    dropped       data the buffer cap pushed out

Choices the contract leaves open, made here:

* Until the first window is emitted or skipped, an item older than the first window moves
  the first window back to cover it, so the arrival order of the first items does not
  matter; after that, the next start only moves forward.
* The cap bounds what is held, per modality, at ``max_buffer_s`` worth of data:
  ``max_buffer_s * fps`` video slots, ``max_buffer_s * audio_rate`` samples and
  ``max_buffer_s * TEXT_EVENTS_PER_S`` text events. Past it, video and audio give up the
  oldest windows (the next start moves past the oldest data; all data before it is
  dropped and counted), text drops its oldest event. A cap on data, not on time span,
  so that one far-future timestamp does not throw away everything older.
* Audio counts (late, dropped) are in samples; video counts frames, text counts events.
  A duplicate audio sample overwrites the earlier one (last write wins). Of two frames
  equally near a slot centre the earlier pts wins; of two with the same pts, the first to
  arrive. Text events with the same pts keep their arrival order.
* A window's video is final once a frame at or past the centre of its last slot has
  arrived: a source delivers frames in pts order, and a later frame is farther from that
  centre, so it cannot replace the slot's pick. Video therefore settles half a slot ahead
  of its newest frame (a heartbeat does not: a frame may still follow it into the slot),
  and a window waits for the frame past its last slot's centre, not for one past its end,
  up to a frame interval sooner with the same content.
* With no gating modality, a window waits for ``end + max_delay`` (or, once every
  configured modality has ended, for nothing).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

from streamer.align.samples import SampleBuffer
from streamer.align.windows import check_grid, first_cover_start, last_cover_start
from streamer.errors import ConfigError
from streamer.frames import (
    MODALITIES,
    NS,
    AudioChunk,
    Item,
    Modality,
    TextEvent,
    VideoFrame,
    Window,
    modality_of,
)
from streamer.timebase import frame_rank, sample_index, sample_time_ns, slot_index, slot_ns

TEXT_EVENTS_PER_S = 100  # the text buffer holds this many events per second of max_buffer_s

_Text = tuple[int, int, TextEvent]  # (pts_ns, arrival number, event)


def _zeros() -> dict[Modality, int]:
    return dict.fromkeys(MODALITIES, 0)


def _pts(entry: _Text) -> int:
    return entry[0]


def _order(entry: _Text) -> tuple[int, int]:
    return entry[0], entry[1]


@dataclass(slots=True)
class AlignerStats:
    """Counters of one aligner. Audio counts samples, video frames, text events."""

    late: dict[Modality, int] = field(default_factory=_zeros)  # arrived after their window
    dropped: dict[Modality, int] = field(default_factory=_zeros)  # pushed out by the cap
    windows: int = 0  # emitted
    empty_skipped: int = 0  # ready windows that held no data, not emitted


class StreamAligner:
    """Cuts one stream's items into windows; see the module docstring for the terms.

    ``modalities`` are the configured ones; each starts live. ``fps`` and ``audio_rate``
    are the model's; ``hop_ns`` must be a whole number of video slots and audio samples.
    """

    def __init__(
        self,
        stream: str,
        *,
        length_ns: int,
        hop_ns: int,
        max_delay_ns: int,
        fps: int,
        audio_rate: int,
        modalities: Iterable[Modality],
        max_buffer_s: float = 30.0,
    ) -> None:
        check_grid(length_ns, hop_ns, fps, audio_rate)
        if max_delay_ns < 0:
            raise ConfigError("window.max_delay", "must not be negative")
        wanted = set(modalities)
        unknown = wanted - set(MODALITIES)
        if unknown:
            raise ConfigError("modalities", f"unknown: {', '.join(sorted(unknown))}")
        if not wanted:
            raise ConfigError("modalities", "at least one is needed")
        if max_buffer_s * NS < length_ns:
            raise ConfigError("max_buffer_s", f"{max_buffer_s} s is shorter than a window")

        self.stream = stream
        self.length_ns = length_ns
        self.hop_ns = hop_ns
        self.max_delay_ns = max_delay_ns
        self.fps = fps
        self.audio_rate = audio_rate
        self.modalities: tuple[Modality, ...] = tuple(m for m in MODALITIES if m in wanted)
        self.stats = AlignerStats()

        self._slot_ns = slot_ns(fps)
        self._n_slots = length_ns // self._slot_ns  # video slots per window
        self._n_samples = length_ns * audio_rate // NS  # audio samples per window
        self._max_slots = max(self._n_slots, int(max_buffer_s * fps))
        self._max_samples = max(self._n_samples, int(max_buffer_s * audio_rate))
        self._max_texts = max(1, int(max_buffer_s * TEXT_EVENTS_PER_S))

        self._wm: dict[Modality, int | None] = dict.fromkeys(self.modalities, None)
        self._settled: dict[Modality, int | None] = dict.fromkeys(self.modalities, None)
        self._half_slot = self._slot_ns // 2
        self._live: dict[Modality, bool] = dict.fromkeys(self.modalities, True)
        self._ended: set[Modality] = set()

        self._next: int | None = None  # next window start; None until the first item
        self._started = False  # a window has been emitted or skipped: _next only grows
        self._video: dict[int, VideoFrame] = {}  # slot -> the frame nearest its centre
        self._texts: list[_Text] = []  # sorted by (pts, arrival)
        self._arrivals = 0
        self._audio = SampleBuffer()

    # ----------------------------------------------------------------------------- input

    def push(self, item: Item) -> bool:
        """Buffer an item. False if it was counted late or dropped as a whole."""
        m = modality_of(item)
        self._check(m)
        if item.stream != self.stream:
            raise ValueError(f"item of stream {item.stream!r} pushed to {self.stream!r}")
        if isinstance(item, AudioChunk):
            return self._push_audio(item)
        t = item.pts_ns
        self._raise(m, t, t + self._half_slot if m == "video" else t)
        passed = self._next if self._started else None
        self._place(t)
        if passed is not None and first_cover_start(t, self.length_ns, self.hop_ns) < passed:
            self.stats.late[m] += 1
            return False
        if isinstance(item, TextEvent):
            return self._put_text(item)
        self._put_frame(item)
        while len(self._video) > self._max_slots:  # give up the windows of the oldest slot
            oldest = self._video[min(self._video)].pts_ns
            self._advance(last_cover_start(oldest, self.hop_ns) + self.hop_ns, dropped=True)
        return self._next is not None and t >= self._next

    def heartbeat(self, modality: Modality, ts_ns: int) -> None:
        """Raise the watermark of an idle but alive modality; never lowers it."""
        self._check(modality)
        self._raise(modality, ts_ns, ts_ns)

    def set_live(self, modality: Modality, live: bool) -> None:
        """Only live modalities gate emission; a non-live one still contributes data."""
        self._check(modality)
        self._live[modality] = live

    def end(self, modality: Modality) -> None:
        """The modality's source ended: its watermark is +inf, it no longer gates."""
        self._check(modality)
        self._ended.add(modality)

    # ---------------------------------------------------------------------------- output

    def poll(self, now_ns: int) -> list[Window]:
        """The windows ready at ``now_ns``, in start order. Once every modality has ended,
        that is all of them; those running past the end of the data are cut there."""
        front = self._frontier(now_ns)
        return self._emit(front, cut=None if front is not None else self._data_end())

    def flush(self, now_ns: int | None = None) -> list[Window]:
        """Shutdown: emit every remaining window that holds data. Given the stop instant
        ``now_ns``, those that ``poll(now_ns)`` would not have emitted yet (or, once every
        modality has ended, those running past the data) are cut there: ``partial``."""
        if now_ns is None:
            return self._emit(None, cut=self._data_end())
        front = self._frontier(now_ns)
        ready = front if front is not None else self._data_end()
        return self._emit(None, cut=now_ns, ready=ready)

    def next_deadline_ns(self) -> int | None:
        """When poll() would next emit by timeout: the end + max_delay of the first pending
        window that holds data; None if no data is buffered."""
        t = self._earliest()
        if t is None or self._next is None:
            return None
        first = max(self._next, first_cover_start(t, self.length_ns, self.hop_ns))
        return first + self.length_ns + self.max_delay_ns

    @property
    def done(self) -> bool:
        """Every configured modality ended and nothing is left to emit."""
        return len(self._ended) == len(self.modalities) and self._earliest() is None

    @property
    def next_start_ns(self) -> int | None:
        """The start of the next window to emit (None before the first item)."""
        return self._next

    def watermark_ns(self, modality: Modality) -> int | None:
        """The modality's watermark (None: nothing seen yet); an ended one no longer gates."""
        self._check(modality)
        return self._wm[modality]

    # -------------------------------------------------------------------------- emission

    def _frontier(self, now_ns: int) -> int | None:
        """Windows ending at or before this are ready (None: all of them)."""
        gating = [m for m in self.modalities if self._live[m] and m not in self._ended]
        if not gating and len(self._ended) == len(self.modalities):
            return None
        front = now_ns - self.max_delay_ns
        marks = [self._settled[m] for m in gating]
        if marks and all(w is not None for w in marks):
            front = max(front, min(w for w in marks if w is not None))
        return front

    def _data_end(self) -> int | None:
        """How far the data reaches: the latest item's time (a frame's pts, an audio
        chunk's end, a text event's time), never ahead of what arrived."""
        marks = [w for w in self._wm.values() if w is not None]
        return max(marks) if marks else None

    def _emit(
        self, front: int | None, *, cut: int | None = None, ready: int | None = None
    ) -> list[Window]:
        """Windows up to ``front`` (None: all); one ending past ``ready`` (default
        ``cut``) is cut at ``cut``."""
        out: list[Window] = []
        L, H = self.length_ns, self.hop_ns
        whole = ready if ready is not None else cut
        while self._next is not None:
            start = self._next
            if front is not None and start + L > front:
                break  # not ready
            if self._holds_data(start):
                short = cut is not None and whole is not None and start + L > whole
                out.append(self._window(start, cut if short else None))
                self.stats.windows += 1
                self._advance(start + H, dropped=False)
                continue
            # Empty and ready: jump in one step to the first window that holds data, or
            # past every ready window if none does.
            target: int | None = None
            if front is not None:
                target = first_cover_start(front, L, H)
            t = self._earliest()
            if t is not None:
                data = first_cover_start(t, L, H)
                target = data if target is None else min(target, data)
            if target is None:
                break  # nothing buffered and nothing can time out
            assert target > start, "an empty ready window must be skipped forward"
            self.stats.empty_skipped += (target - start) // H
            self._advance(target, dropped=False)
        return out

    def _holds_data(self, start: int) -> bool:
        k0 = slot_index(start, self._slot_ns)
        if self._video and any(k in self._video for k in range(k0, k0 + self._n_slots)):
            return True
        j = bisect.bisect_left(self._texts, start, key=_pts)
        if j < len(self._texts) and self._texts[j][0] < start + self.length_ns:
            return True
        s0 = sample_index(start, self.audio_rate)
        return self._audio.any_in(s0, s0 + self._n_samples)

    def _window(self, start: int, cut_ns: int | None = None) -> Window:
        end = start + self.length_ns
        k0 = slot_index(start, self._slot_ns)
        video = tuple(self._video.get(k) for k in range(k0, k0 + self._n_slots))
        s0 = sample_index(start, self.audio_rate)
        audio, mask = self._audio.read(s0, s0 + self._n_samples)  # fresh arrays
        j0 = bisect.bisect_left(self._texts, start, key=_pts)
        j1 = bisect.bisect_left(self._texts, end, key=_pts)
        texts = tuple(e for _, _, e in self._texts[j0:j1])
        has = {
            "video": any(f is not None for f in video),
            "audio": bool(mask.any()),
            "text": bool(texts),
        }
        present: dict[Modality, bool] = {m: m in self.modalities and has[m] for m in MODALITIES}
        return Window(
            stream=self.stream,
            start_ns=start,
            end_ns=end,
            video=video,
            audio=audio,
            audio_mask=mask,
            audio_rate=self.audio_rate,
            texts=texts,
            present=present,
            cut_ns=cut_ns,
        )

    # --------------------------------------------------------------------------- buffers

    def _check(self, modality: Modality) -> None:
        if modality not in self._wm:
            raise ValueError(f"modality {modality!r} is not configured for {self.stream!r}")

    def _raise(self, modality: Modality, ts_ns: int, settled_ns: int) -> None:
        wm = self._wm[modality]
        if wm is None or ts_ns > wm:
            self._wm[modality] = ts_ns
        done = self._settled[modality]
        if done is None or settled_ns > done:
            self._settled[modality] = settled_ns

    def _place(self, t_first: int) -> None:
        """Set the first window for an item from ``t_first`` on, or move it back while no
        window has been emitted or skipped."""
        want = first_cover_start(t_first, self.length_ns, self.hop_ns)
        if self._next is None or (not self._started and want < self._next):
            self._next = want

    def _advance(self, new_start: int, *, dropped: bool) -> None:
        """Move the next start forward to ``new_start``, evicting everything before it."""
        assert self._next is not None and new_start >= self._next
        k_new = slot_index(new_start, self._slot_ns)
        gone = [k for k in self._video if k < k_new]
        for k in gone:
            del self._video[k]
        j = bisect.bisect_left(self._texts, new_start, key=_pts)
        del self._texts[:j]
        samples = self._audio.evict_before(sample_index(new_start, self.audio_rate))
        if dropped:
            self.stats.dropped["video"] += len(gone)
            self.stats.dropped["text"] += j
            self.stats.dropped["audio"] += samples
        self._next = new_start
        self._started = True

    def _earliest(self) -> int | None:
        """The time of the oldest buffered data (None: nothing buffered)."""
        times: list[int] = []
        if self._video:
            times.append(self._video[min(self._video)].pts_ns)
        if self._texts:
            times.append(self._texts[0][0])
        i = self._audio.first()
        if i is not None:
            times.append(sample_time_ns(i, self.audio_rate))
        return min(times) if times else None

    def _put_frame(self, frame: VideoFrame) -> None:
        k = slot_index(frame.pts_ns, self._slot_ns)
        cur = self._video.get(k)
        slot = self._slot_ns
        if cur is None or frame_rank(frame.pts_ns, slot) < frame_rank(cur.pts_ns, slot):
            self._video[k] = frame

    def _put_text(self, event: TextEvent) -> bool:
        entry = (event.pts_ns, self._arrivals, event)
        self._arrivals += 1
        bisect.insort(self._texts, entry, key=_order)
        if len(self._texts) > self._max_texts:
            oldest = self._texts.pop(0)
            self.stats.dropped["text"] += 1
            return oldest is not entry
        return True

    def _push_audio(self, chunk: AudioChunk) -> bool:
        if chunk.rate != self.audio_rate:
            raise ValueError(f"audio at {chunk.rate} Hz, the aligner expects {self.audio_rate}")
        self._raise("audio", chunk.end_ns, chunk.end_ns)
        n = len(chunk.samples)
        if n == 0:
            return True  # nothing to place; it still raised the watermark
        rate = self.audio_rate
        i0 = sample_index(chunk.pts_ns, rate)
        i1 = i0 + n
        passed = self._next if self._started else None
        self._place(sample_time_ns(i0, rate))
        keep = i0
        if passed is not None:
            # Sample i is late iff first_cover_start(time(i)) < passed, i.e. iff
            # time(i) < passed + length - hop: a sample-aligned bound.
            keep = max(i0, sample_index(passed + self.length_ns - self.hop_ns, rate))
            if keep > i0:
                self.stats.late["audio"] += min(keep, i1) - i0
            if keep >= i1:
                return False
        self._audio.write(keep, chunk.samples[keep - i0 :])
        excess = len(self._audio) - self._max_samples
        if excess > 0:  # give up the windows of the oldest samples
            oldest = sample_time_ns(self._audio.nth(excess - 1), rate)
            self._advance(last_cover_start(oldest, self.hop_ns) + self.hop_ns, dropped=True)
        assert self._next is not None
        return i1 > sample_index(self._next, rate)
