"""A microphone through PortAudio (sounddevice): ``mic:default``, ``mic:<name>``, ``mic:<index>``.

sounddevice is imported inside :meth:`MicSource.open`: without PortAudio its import raises
``OSError``, and everything else must still run. PortAudio's callback thread puts 20 ms
:class:`~streamer.frames.AudioChunk` s (float32 mono at the model rate) into a live
:class:`~.handoff.Handoff` (drop-oldest). Timestamps count samples from the first
callback and resync when they drift more than ``resync_s`` from the clock (PortAudio may
deliver the first 1.5-2 s in bursts while it prebuffers).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np

from models.spec import ModelSpec
from streamer.clock import NODE_CLOCK, Clock
from streamer.errors import SourceError, SourceOpenError, SourcePermanentError
from streamer.frames import NS, AudioChunk, Item, Modality
from streamer.sources.base import DEFAULT_QUEUE
from streamer.sources.handoff import Handoff

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
        self.overflows = 0  # PortAudio reported lost input
        self.stamps = SampleClock(clock, self.rate, resync_s)
        self._handoff: Handoff[Item] | None = None
        self._stream: Any = None
        self._closing = False

    @property
    def dropped(self) -> int:
        return self._handoff.dropped if self._handoff is not None else 0

    async def open(self) -> None:
        if self._stream is not None:
            raise RuntimeError(f"{self.url}: already open")
        loop = asyncio.get_running_loop()
        self._closing = False
        self.stamps = SampleClock(self.clock, self.rate, self.stamps.resync_ns / NS)
        self._handoff = Handoff(self.queue_size, loop=loop, blocking=False)
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

    def _callback(self, indata: Any, frames: int, time_info: Any, status: Any) -> None:
        """PortAudio's thread: stamp the block and hand it to the loop; never blocks."""
        assert self._handoff is not None
        if status and status.input_overflow:
            self.overflows += 1
        start = self.stamps.stamp(frames)
        samples = np.array(indata[:, 0], dtype=np.float32)  # copy: PortAudio reuses indata
        self._handoff.put(AudioChunk(self.stream, start, samples, self.rate))

    def _finished(self) -> None:
        if not self._closing and self._handoff is not None:
            self._handoff.put_error(SourceError(self.url, "the input stream stopped"))

    async def recv(self) -> Item:
        if self._handoff is None:
            raise SourceError(self.url, "recv() before open()")
        try:  # asyncio.timeout, never wait_for (StreamPipeline._tick)
            async with asyncio.timeout(self.stall_s):
                return await self._handoff.get()
        except TimeoutError:
            # a device that vanishes (unplugged, its sound server gone) may just go quiet
            problem = f"no audio for {self.stall_s:g} s: the device is gone"
            raise SourceError(self.url, problem) from None

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
