"""Build the capture sources of one configured stream (video and audio; text is elsewhere).

When ``video`` and ``audio`` name the same URL, ONE source reads the container and
yields both, so both tracks share its clock. Otherwise there is one source per modality,
chosen by URL scheme. Sources are returned unopened: the caller awaits ``open()``.
"""

from __future__ import annotations

from models.spec import ModelSpec
from streamer.clock import NODE_CLOCK, Clock
from streamer.config import StreamConfig
from streamer.errors import SourceOpenError
from streamer.frames import Modality
from streamer.sources.av import SCHEMES as AV_SCHEMES
from streamer.sources.av import AVSource
from streamer.sources.base import Source
from streamer.sources.mic import MicSource
from streamer.sources.synthetic import SyntheticSource


def make_source(
    url: str,
    modalities: frozenset[Modality],
    *,
    stream: StreamConfig,
    spec: ModelSpec,
    clock: Clock,
) -> Source:
    """One source for ``url`` yielding ``modalities`` (video, audio or both)."""
    scheme = url.split(":", 1)[0] if ":" in url else ""
    video = "video" in modalities
    audio = "audio" in modalities
    if scheme in AV_SCHEMES:
        return AVSource(
            url,
            video=video,
            audio=audio,
            spec=spec,
            clock=clock,
            stream=stream.id,
            realtime=stream.realtime,
            loop=stream.loop,
        )
    if scheme == "mic":
        if video:
            raise SourceOpenError(url, "a microphone has no video")
        return MicSource(url, spec=spec, clock=clock, stream=stream.id)
    if scheme == "synthetic":
        return SyntheticSource(
            url, video=video, audio=audio, spec=spec, clock=clock, stream=stream.id
        )
    if scheme == "webrtc" or url == "webrtc":
        raise SourceOpenError(url, "webrtc ingest is not available yet")
    raise SourceOpenError(url, f"unsupported scheme {scheme!r}")


def open_sources(
    stream: StreamConfig, *, spec: ModelSpec, clock: Clock = NODE_CLOCK
) -> list[Source]:
    """The video/audio sources of ``stream``, not yet opened (await each ``open()``)."""
    if stream.video is not None and stream.video == stream.audio:
        both: frozenset[Modality] = frozenset({"video", "audio"})
        return [make_source(stream.video, both, stream=stream, spec=spec, clock=clock)]
    sources: list[Source] = []
    if stream.video is not None:
        only_video: frozenset[Modality] = frozenset({"video"})
        sources.append(make_source(stream.video, only_video, stream=stream, spec=spec, clock=clock))
    if stream.audio is not None:
        only_audio: frozenset[Modality] = frozenset({"audio"})
        sources.append(make_source(stream.audio, only_audio, stream=stream, spec=spec, clock=clock))
    return sources
