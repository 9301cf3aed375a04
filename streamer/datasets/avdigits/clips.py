"""One clip: ``clip_NNNN.mp4`` (H.264 + AAC) and ``clip_NNNN.jsonl`` (text events).

A clip is ``segments`` consecutive segments of a split's sequence, starting at
``first``. The mp4 is byte-for-byte reproducible: single-threaded x264 with fixed
options, ``+bitexact`` muxing (no creation time, no library version strings).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.codec.context import Flags

from streamer.datasets.avdigits import live
from streamer.datasets.avdigits.plan import plan_segment
from streamer.datasets.avdigits.settings import NS, Settings, Split

AUDIO_BLOCK = 1024
X264 = {"preset": "veryfast", "crf": "28", "g": "20", "threads": "1", "bf": "0"}


@dataclass(frozen=True)
class Segment:
    start: float  # seconds from the clip's start
    end: float
    label: int


def write_clip(mp4: Path, jsonl: Path, *, seed: int, split: Split, first: int, segments: int,
               settings: Settings) -> list[Segment]:  # fmt: skip
    layout = settings.layout
    seg_ns = layout.segment_ns
    origin_ns = first * seg_ns
    n_frames = segments * seg_ns * layout.fps // NS
    audio = live.audio_samples(
        seed, first * layout.segment_samples, segments * layout.segment_samples,
        split=split, settings=settings,
    )  # fmt: skip
    bitexact = {"fflags": "+bitexact"}
    with av.open(str(mp4), mode="w", format="mp4", options=bitexact) as out:
        vs = out.add_stream("libx264", rate=layout.fps, options=dict(X264))
        vs.width, vs.height = layout.width, layout.height
        vs.pix_fmt = "yuv420p"
        vs.codec_context.flags |= Flags.bitexact
        aus = out.add_stream("aac", rate=layout.audio_rate)
        aus.layout = "mono"
        aus.bit_rate = 48_000
        aus.codec_context.flags |= Flags.bitexact
        vi = ai = 0
        while vi < n_frames or ai < len(audio):
            if vi < n_frames and vi * layout.audio_rate <= ai * layout.fps:
                t_ns = vi * NS // layout.fps
                image = live.frame_at(seed, origin_ns + t_ns, split=split, settings=settings)
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = vi
                frame.time_base = Fraction(1, layout.fps)
                out.mux(vs.encode(frame))
                vi += 1
            else:
                block = audio[ai : ai + AUDIO_BLOCK]
                af = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(block[None, :]), format="fltp", layout="mono"
                )
                af.sample_rate = layout.audio_rate
                af.pts = ai
                af.time_base = Fraction(1, layout.audio_rate)
                out.mux(aus.encode(af))
                ai += len(block)
        out.mux(vs.encode(None))
        out.mux(aus.encode(None))
    lines = []
    for k in range(segments):
        for t, text in live.text_events(seed, first + k, split=split, settings=settings):
            rel = round(t - first * layout.segment_s, 3)
            lines.append(json.dumps({"t": rel, "text": text}, ensure_ascii=False))
    jsonl.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return [
        Segment(
            k * layout.segment_s,
            (k + 1) * layout.segment_s,
            plan_segment(seed, split, first + k, settings).label,
        )
        for k in range(segments)
    ]
