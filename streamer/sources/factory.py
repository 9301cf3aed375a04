"""Build the capture sources of one configured stream (video and audio; the text source
comes from the node's MQTT text input, :mod:`streamer.sources.mqtt_text`).

When ``video`` and ``audio`` name the same URL, ONE source reads the container and
yields both, so both tracks share its clock. Otherwise there is one source per modality,
chosen by URL scheme. Sources are returned unopened: the caller awaits ``open()``.
:func:`preflight` runs the checks that need no device or network first, so ``streamer
run`` and ``check`` refuse what no retry would cure, naming the field.
"""

from __future__ import annotations

from typing import Literal

from models.spec import ModelSpec
from streamer.clock import NODE_CLOCK, Clock, NodeClock
from streamer.config import Config, StreamConfig
from streamer.errors import ConfigError, SourceOpenError, SourcePermanentError
from streamer.frames import Modality
from streamer.snapshots.ring import SnapshotRing
from streamer.sources.av import AVSource
from streamer.sources.avurls import SCHEMES as AV_SCHEMES
from streamer.sources.avurls import check_readable, file_path, v4l2_options
from streamer.sources.base import DEFAULT_QUEUE, Source
from streamer.sources.mic import MicSource, import_sounddevice
from streamer.sources.synthetic import SyntheticSource, synthetic_options
from streamer.sources.webrtc import WebRTCHub, WebRTCSource

Capture = Literal["thread", "process"]


def make_source(
    url: str,
    modalities: frozenset[Modality],
    *,
    stream: StreamConfig,
    spec: ModelSpec,
    clock: Clock,
    webrtc: WebRTCHub | None = None,
    takes_text: bool = False,
    snapshots: SnapshotRing | None = None,
    capture: Capture = "thread",
) -> Source:
    """One source for ``url`` yielding ``modalities`` (video, audio or both);
    ``takes_text``: the stream has text, which a WebRTC peer's data channel may send;
    ``snapshots``: the stream's snapshot ring, which its video source feeds;
    ``capture``: ``process`` decodes a PyAV URL, or records a microphone, in a capture
    process of its own (on the node clock only: a test's fake clock keeps the thread),
    which also makes the snapshots' JPEGs."""
    scheme = url.split(":", 1)[0] if ":" in url else ""
    video = "video" in modalities
    audio = "audio" in modalities
    ring = snapshots if video else None
    snapshot = ring.offer if ring is not None else None
    if scheme in AV_SCHEMES and capture == "process" and isinstance(clock, NodeClock):
        from streamer.capture.process import ProcessSource  # it imports the sources

        return ProcessSource(
            url, video=video, audio=audio, spec=spec, clock=clock, stream=stream.id,
            realtime=stream.realtime, loop=stream.loop, slot_frames=True, snapshots=ring,
        )  # fmt: skip
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
            snapshot=snapshot,
        )
    if scheme == "mic":
        if video:
            raise SourcePermanentError(url, "a microphone has no video")
        if capture == "process" and isinstance(clock, NodeClock):
            from streamer.capture.process import ProcessSource

            # as many 20 ms blocks as the hand-off of a MicSource in the node holds
            return ProcessSource(url, video=False, audio=True, spec=spec, clock=clock,
                                 stream=stream.id, slots=DEFAULT_QUEUE)  # fmt: skip
        return MicSource(url, spec=spec, clock=clock, stream=stream.id)
    if scheme == "synthetic":
        return SyntheticSource(
            url, video=video, audio=audio, spec=spec, clock=clock, stream=stream.id,
            snapshot=snapshot,
        )  # fmt: skip
    if url == "webrtc":
        if webrtc is None:
            raise SourcePermanentError(url, "webrtc ingest needs the HTTP server (http.listen)")
        return webrtc.add(
            WebRTCSource(
                stream.id,
                modalities,
                spec=spec,
                clock=clock,
                takes_text=takes_text,
                snapshot=snapshot,
            )  # fmt: skip
        )
    raise SourcePermanentError(url, f"unsupported scheme {scheme!r}")


def check_url(url: str, modalities: frozenset[Modality]) -> None:
    """What can be known of ``url`` without a device or the network: SourcePermanentError
    for an unsupported option, a missing package or a file that permission denies."""
    scheme = url.split(":", 1)[0] if ":" in url else ""
    if scheme == "file":
        check_readable(url, file_path(url))
    elif scheme == "v4l2":
        v4l2_options(url)
    elif scheme == "mic":
        import_sounddevice(url)
    elif scheme == "synthetic":
        synthetic_options(url, modalities)


def _wanted(stream: StreamConfig) -> list[tuple[str, str, frozenset[Modality]]]:
    """(config key, URL, modalities) of each source of ``stream``."""
    if stream.video is not None and stream.video == stream.audio:
        return [("video", stream.video, frozenset({"video", "audio"}))]
    wanted: list[tuple[str, str, frozenset[Modality]]] = []
    if stream.video is not None:
        wanted.append(("video", stream.video, frozenset({"video"})))
    if stream.audio is not None:
        wanted.append(("audio", stream.audio, frozenset({"audio"})))
    return wanted


def preflight(cfg: Config) -> None:
    """:func:`check_url` for every source of ``cfg``; the first refusal becomes a
    ConfigError naming its field (``streams[0].audio``), for exit 2 before anything runs."""
    for i, stream in enumerate(cfg.streams):
        for key, url, modalities in _wanted(stream):
            try:
                check_url(url, modalities)
            except SourceOpenError as e:
                shown = url if len(url) <= 200 else url[:200] + "..."
                raise ConfigError(f"streams[{i}].{key}", f"{shown}: {e.problem}") from None


def open_sources(
    stream: StreamConfig,
    *,
    spec: ModelSpec,
    clock: Clock = NODE_CLOCK,
    webrtc: WebRTCHub | None = None,
    takes_text: bool = False,
    snapshots: SnapshotRing | None = None,
    capture: Capture = "thread",
) -> list[Source]:
    """The video/audio sources of ``stream``, not yet opened (await each ``open()``);
    ``snapshots``: the stream's snapshot ring, which its video source feeds;
    ``capture``: the node's setting, which the stream's own ``capture`` overrides."""
    return [
        make_source(
            url,
            mods,
            stream=stream,
            spec=spec,
            clock=clock,
            webrtc=webrtc,
            takes_text=takes_text,
            snapshots=snapshots,
            capture=stream.capture or capture,
        )  # fmt: skip
        for _, url, mods in _wanted(stream)
    ]
