"""Convert decoded media once, at the source, into what the model takes.

video  av.VideoFrame -> RGB uint8 [S, S, 3] (one swscale call: scale + colour convert)
audio  av.AudioFrame -> float32 mono [n] at the model's rate (av.AudioResampler)
"""

from __future__ import annotations

import av
import numpy as np
import numpy.typing as npt


def video_to_rgb(frame: av.VideoFrame, size: int) -> npt.NDArray[np.uint8]:
    """RGB uint8 [size, size, 3], scaled (aspect not kept) and converted in one call."""
    out = frame.reformat(width=size, height=size, format="rgb24", interpolation="AREA")
    arr = out.to_ndarray()
    return np.ascontiguousarray(arr, dtype=np.uint8)


def rgb_to_frame(image: npt.NDArray[np.uint8]) -> av.VideoFrame:
    """Wrap an RGB uint8 [H, W, 3] array as an av.VideoFrame (for synthetic sources)."""
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")


def _mono(frame: av.AudioFrame) -> npt.NDArray[np.float32]:
    arr = frame.to_ndarray()
    if frame.format.is_planar:
        samples = arr[0]  # [channels, n]; mono has one plane
    else:
        samples = arr.reshape(-1, len(frame.layout.channels))[:, 0]  # [1, n * channels]
    return np.ascontiguousarray(samples, dtype=np.float32)


class AudioConverter:
    """Resample any decoded audio to float32 mono at ``rate``.

    :meth:`convert` returns ``(start_seconds, samples)`` pieces; ``start_seconds`` is the
    media time of the piece's first sample (``None`` when the input carried no pts).
    ``convert(None)`` flushes the resampler at the end of a stream.
    """

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)

    def convert(
        self, frame: av.AudioFrame | None
    ) -> list[tuple[float | None, npt.NDArray[np.float32]]]:
        out: list[tuple[float | None, npt.NDArray[np.float32]]] = []
        for f in self._resampler.resample(frame):
            if f.samples == 0:
                continue
            out.append((f.time, _mono(f)))
        return out
