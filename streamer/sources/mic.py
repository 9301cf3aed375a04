"""A microphone through PortAudio (sounddevice): ``mic:default``, ``mic:<name>``, ``mic:<index>``.

sounddevice is imported when the input opens: without PortAudio its import raises
``OSError``, and everything else must still run. PortAudio's callback thread hands 20 ms
:class:`~streamer.frames.AudioChunk` s (float32 mono at the model rate) to a sink: a live
:class:`~.handoff.Handoff` (drop-oldest) when the source runs in the node
(:meth:`MicSource.open`), or a capture process's ring (:meth:`MicSource.serve`, under
``capture: process``). Timestamps count samples from the first callback and resync when
they drift more than ``resync_s`` from the clock (PortAudio may deliver the first
1.5-2 s in bursts while it prebuffers).

Why a capture process is the default: when the sound server dies mid-call, the ALSA
PulseAudio plugin can deadlock (its mainloop thread, holding its lock, waits for a
memory block that PortAudio's thread, waiting for that lock, holds). The input then goes
quiet and stopping it never returns. In the node that would cost the stream its
microphone until a restart; in a capture process, the process is ended instead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from typing import Any

import numpy as np

from models.spec import ModelSpec
from streamer.clock import NODE_CLOCK, Clock
from streamer.errors import SourceError, SourceOpenError, SourcePermanentError
from streamer.frames import NS, AudioChunk, Item, Modality
from streamer.sources.base import DEFAULT_QUEUE
from streamer.sources.handoff import Handoff, ItemSink

log = logging.getLogger(__name__)


def import_sounddevice(url: str) -> Any:
    """The sounddevice module; SourcePermanentError when it or PortAudio is missing (a
    missing package does not appear by retrying)."""
    try:
        import sounddevice
    except OSError:
        problem = "PortAudio is not available (install libportaudio2)"
        raise SourcePermanentError(url, problem) from None
    except ImportError:
        problem = "sounddevice is not installed (pip install sounddevice)"
        raise SourcePermanentError(url, problem) from None
    return sounddevice


STALL_S = 2.0  # no callback for this long: the device is gone
FIRST_S = 4.0  # the first callback: PortAudio over PulseAudio prebuffers about 2 s first
_OPEN: set[int] = set()  # MicSources with a running PortAudio stream
_initialised = False


def _refresh_devices(sd: Any) -> None:
    """PortAudio lists devices once, at initialisation: re-initialise it (when no input
    of ours is open, since that would stop them) so a device that came back is found."""
    global _initialised
    if _initialised and not _OPEN:
        sd._terminate()
        sd._initialize()
    _initialised = True


def _input_devices(sd: Any) -> list[tuple[int, str]]:
    return [
        (i, str(d["name"]))
        for i, d in enumerate(sd.query_devices())
        if int(d["max_input_channels"]) > 0
    ]


def resolve_device(url: str, sd: Any) -> int | None:
    """The PortAudio device index for ``mic:...`` (None = PortAudio's default input)."""
    want = url.split(":", 1)[1] if ":" in url else url
    devices = _input_devices(sd)
    listing = ", ".join(f"{i}: {name}" for i, name in devices) or "none"
    if want == "default":
        if not devices:
            raise SourceOpenError(url, "no input devices")
        return None
    if want.isascii() and want.isdigit() and len(want) <= 9:
        index = int(want)
        if any(i == index for i, _ in devices):
            return index
        raise SourceOpenError(url, f"no input device {index} (available: {listing})")
    matches = [i for i, name in devices if want.lower() in name.lower()]
    if not matches:
        raise SourceOpenError(url, f"no input device matching {want!r} (available: {listing})")
    return matches[0]


class SampleClock:
    """Stamps consecutive blocks of samples by counting them from the first block.

    The first block is taken to end "now". When the counted time drifts more than
    ``resync_s`` from the clock, it resyncs, but never backwards: a burst that ran ahead
    continues where the previous block ended until the clock catches up. Pure logic on an
    injected clock; called from one thread.
    """

    def __init__(self, clock: Clock, rate: int, resync_s: float = 0.2) -> None:
        self.clock = clock
        self.rate = rate
        self.resync_ns = round(resync_s * NS)
        self.resyncs = 0
        self._base_ns: int | None = None  # node time of sample 0 (since the last resync)
        self._count = 0  # samples since then

    def stamp(self, frames: int) -> int:
        """Node ns of the first sample of the next block of ``frames`` samples."""
        now = self.clock.now_ns()
        length = frames * NS // self.rate
        if self._base_ns is None:
            self._base_ns, self._count = now - length, 0
        start = self._base_ns + self._count * NS // self.rate
        if abs(start + length - now) > self.resync_ns:
            self.resyncs += 1
            start = max(now - length, start)
            self._base_ns, self._count = start, 0
        self._count += frames
        return start


class MicSource:
    # what a capture process reports of every source it serves: none of them happen here
    corrupt = 0
    stale = 0
    skipped = 0

    def __init__(
        self,
        device: str,
        *,
        spec: ModelSpec,
        clock: Clock = NODE_CLOCK,
        stream: str = "",
        block_s: float = 0.02,
        resync_s: float = 0.2,
        queue_size: int = DEFAULT_QUEUE,
        stall_s: float = STALL_S,
        first_s: float = FIRST_S,
    ) -> None:
        self.url = device if device.startswith("mic:") else f"mic:{device}"
        self.stream = stream
        self.spec = spec
        self.clock = clock
        self.modalities: frozenset[Modality] = frozenset({"audio"})
        self.live = True
        self.rate = spec.audio_rate
        self.blocksize = max(1, round(block_s * self.rate))
        self.queue_size = queue_size
        self.stall_s = stall_s
        self.first_s = max(first_s, stall_s)
        self.overflows = 0  # PortAudio reported lost input
        self.stamps = SampleClock(clock, self.rate, resync_s)
        self._handoff: Handoff[Item] | None = None  # the node's, in open()
        self._sink: ItemSink[Item] | None = None  # where the callback hands blocks
        self._stream: Any = None
        self._closing = False
        self._stop = threading.Event()  # serve(): stopped, or the input ended
        self._heard = 0.0  # monotonic s of the last callback (0: none since the open)

    @property
    def dropped(self) -> int:
        return self._handoff.dropped if self._handoff is not None else 0

    async def open(self) -> None:
        if self._stream is not None:
            raise RuntimeError(f"{self.url}: already open")
        loop = asyncio.get_running_loop()
        self._closing, self._heard = False, 0.0
        self.stamps = SampleClock(self.clock, self.rate, self.stamps.resync_ns / NS)
        self._handoff = self._sink = Handoff(self.queue_size, loop=loop, blocking=False)
        # PortAudio initialisation and device start block: keep them off the loop
        self._stream = await asyncio.to_thread(self._start)

    def _start(self) -> Any:
        sd = import_sounddevice(self.url)
        _refresh_devices(sd)
        device = resolve_device(self.url, sd)
        try:
            stream = sd.InputStream(
                device=device,
                samplerate=self.rate,
                channels=1,
                dtype="float32",
                blocksize=self.blocksize,
                callback=self._callback,
                finished_callback=self._finished,
            )
            stream.start()
            _OPEN.add(id(self))
        except (sd.PortAudioError, ValueError) as e:
            text = " ".join(str(e).split())[:200]
            raise SourceOpenError(self.url, f"cannot open input: {text}") from None
        log.info("%s: recording from %s at %d Hz", self.url, stream.device, self.rate)
        return stream

    def serve(self, sink: ItemSink[Item], ready: concurrent.futures.Future[None]) -> None:
        """Record for a capture process, in the CALLING thread: PortAudio's thread hands
        blocks to ``sink``, and ``ready`` resolves once the input runs (or with its
        SourceOpenError). Returns after :meth:`stop`, or once the input stopped or went
        quiet for ``stall_s`` (both said to ``sink``), closing the input first. That
        close may never return when the sound server died mid-call (see the module's
        note): the capture process's control thread then ends the process."""
        self._sink, self._closing, self._heard = sink, False, 0.0
        self._stop.clear()
        try:
            stream = self._start()
        except SourceOpenError as e:
            ready.set_exception(e)
            return
        ready.set_result(None)
        started = time.monotonic()
        try:
            while not self._stop.is_set():
                heard = self._heard
                due = heard + self.stall_s if heard else started + self.first_s
                left = due - time.monotonic()
                if left <= 0:
                    sink.put_error(SourceError(self.url, self._stall_problem(bool(heard))))
                    break
                self._stop.wait(left)  # a watchdog: woken early by stop() or the end
        finally:
            self._closing = True
            _OPEN.discard(id(self))
            _stop(stream)

    def stop(self) -> None:
        """Make :meth:`serve` return; any thread."""
        self._stop.set()

    def _stall_problem(self, heard: bool) -> str:
        if heard:
            return f"no audio for {self.stall_s:g} s: the device is gone"
        return f"no audio in {self.first_s:g} s since the input started"

    def _callback(self, indata: Any, frames: int, time_info: Any, status: Any) -> None:
        """PortAudio's thread: stamp the block and hand it on; never blocks."""
        sink = self._sink
        assert sink is not None
        self._heard = time.monotonic()
        if status and status.input_overflow:
            self.overflows += 1
        start = self.stamps.stamp(frames)
        samples = np.array(indata[:, 0], dtype=np.float32)  # copy: PortAudio reuses indata
        sink.put(AudioChunk(self.stream, start, samples, self.rate))

    def _finished(self) -> None:
        if not self._closing and self._sink is not None:
            self._sink.put_error(SourceError(self.url, "the input stream stopped"))
        self._stop.set()

    async def recv(self) -> Item:
        if self._handoff is None:
            raise SourceError(self.url, "recv() before open()")
        try:  # asyncio.timeout, never wait_for (StreamPipeline._tick)
            async with asyncio.timeout(self.stall_s if self._heard else self.first_s):
                return await self._handoff.get()
        except TimeoutError:
            # a device that vanishes (unplugged, its sound server gone) may just go quiet
            raise SourceError(self.url, self._stall_problem(bool(self._heard))) from None

    def recv_nowait(self) -> Item | None:
        return None if self._handoff is None else self._handoff.get_nowait()

    async def close(self) -> None:
        self._closing = True
        _OPEN.discard(id(self))
        stream, self._stream = self._stream, None
        if stream is not None:
            await asyncio.to_thread(_stop, stream)
        if self._handoff is not None:
            self._handoff.close()


def _stop(stream: Any) -> None:
    try:
        stream.stop()
    finally:
        stream.close()
