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
from streamer.sources.av import AVSource
from streamer.sources.avurls import SCHEMES as AV_SCHEMES
from streamer.sources.base import Source
from streamer.sources.mic import MicSource
from streamer.sources.synthetic import SyntheticSource
from streamer.sources.webrtc import WebRTCHub


def make_source(
    url: str,
    modalities: frozenset[Modality],
    *,
    stream: StreamConfig,
    spec: ModelSpec,
    clock: Clock,
    webrtc: WebRTCHub | None = None,
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
            slot_frames=True,  # the aligner keeps one frame per slot: convert only that one
        )
    if scheme == "mic":
        if video:
            raise SourceOpenError(url, "a microphone has no video")
        return MicSource(url, spec=spec, clock=clock, stream=stream.id)
    if scheme == "synthetic":
        return SyntheticSource(
            url, video=video, audio=audio, spec=spec, clock=clock, stream=stream.id
        )
    if url == "webrtc":
        if webrtc is None:
            raise SourceOpenError(url, "webrtc ingest needs the HTTP server (http.listen)")
        return webrtc.source(stream.id, modalities)
    raise SourceOpenError(url, f"unsupported scheme {scheme!r}")


def open_sources(
    stream: StreamConfig,
    *,
    spec: ModelSpec,
    clock: Clock = NODE_CLOCK,
    webrtc: WebRTCHub | None = None,
) -> list[Source]:
    """The video/audio sources of ``stream``, not yet opened (await each ``open()``)."""
    wanted: list[tuple[str, frozenset[Modality]]] = []
    if stream.video is not None and stream.video == stream.audio:
        wanted.append((stream.video, frozenset({"video", "audio"})))
    else:
        if stream.video is not None:
            wanted.append((stream.video, frozenset({"video"})))
        if stream.audio is not None:
            wanted.append((stream.audio, frozenset({"audio"})))
    return [
        make_source(url, mods, stream=stream, spec=spec, clock=clock, webrtc=webrtc)
        for url, mods in wanted
    ]
