"""WHIP sessions (RFC 9725): one aiortc peer connection per publishing browser.

A session only negotiates: it fills one stream's
:class:`~streamer.sources.webrtc.WebRTCSource` with a new
:class:`~streamer.sources.webrtc.Feed` and hands it the peer's tracks and the data channel
labelled ``text`` (text events, in the MQTT text topic's format); reading, converting and
queueing them is the source's.

The session ends on DELETE, on the peer's DTLS close, on ICE failure (a peer that vanishes
without closing: aioice's consent checks give up after about 30 s), when it does not
connect within ``connect_timeout``, or at shutdown; then the feed ends, the worker marks
the stream's modalities offline and the slot is free. Ending it closes the peer connection
(its sockets and tasks) and forgets the session at once, so nothing of it outlives the end:
a publisher that posts and deletes in a loop holds one session at a time, not one per loop.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from streamer.sources.webrtc import WebRTCHub, WebRTCSource
from streamer.web.sdp import BadOffer, one_line, parse_offer

log = logging.getLogger(__name__)

TEXT_CHANNEL = "text"
CONNECT_TIMEOUT_S = 20.0  # from the answer to ICE + DTLS up; a stuck session frees its stream


class WhipError(Exception):
    """A request the server refuses; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def rtc_configuration(ice_servers: list[str]) -> RTCConfiguration:
    # An empty list must stay empty: aiortc adds a public STUN server when given None.
    return RTCConfiguration(iceServers=[RTCIceServer(urls=u) for u in ice_servers])


class WhipSession:
    def __init__(self, source: WebRTCSource, *, config: RTCConfiguration) -> None:
        self.id = uuid.uuid4().hex
        self.source = source
        self.stream = source.stream
        self.feed = source.feed()
        self.pc = RTCPeerConnection(configuration=config)
        self.connected = asyncio.Event()
        self.closed = asyncio.Event()
        self.settled = asyncio.Event()  # connected or closed, whichever came first
        self.pc.on("track", self._on_track)
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("connectionstatechange", self._on_state)

    async def answer(self, offer_sdp: str) -> str:
        """Apply the browser's offer; the SDP answer with every ICE candidate gathered."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        local = self.pc.localDescription
        if local is None:  # pragma: no cover - aiortc sets it or raises
            raise WhipError(500, "no local description")
        return str(local.sdp)

    async def close(self, reason: str) -> None:
        """End the session (idempotent): the feed ends with ``reason``, tracks stop."""
        if self.closed.is_set():
            return
        self.closed.set()
        self.settled.set()
        self.feed.end(reason)  # its track readers stop
        log.info("stream %s: webrtc publisher %s gone (%s)", self.stream, self.id[:8], reason)
        await self.pc.close()
        self.pc.remove_all_listeners()  # no cycle back to the session: freed at once

    # -- aiortc events ----------------------------------------------------------------------
    def _on_track(self, track: MediaStreamTrack) -> None:
        self.feed.add_track(track)

    def _on_datachannel(self, channel: object) -> None:
        label = getattr(channel, "label", "")
        if label != TEXT_CHANNEL:
            log.info("stream %s: ignoring data channel %r", self.stream, label)
            return

        channel.on("message", self.feed.add_text)  # type: ignore[attr-defined]

    async def _on_state(self) -> None:
        state = self.pc.connectionState
        log.debug("stream %s: webrtc connection %s", self.stream, state)
        if state == "connected":
            if not self.connected.is_set():
                log.info("stream %s: webrtc publisher %s connected", self.stream, self.id[:8])
            self.connected.set()
            self.settled.set()
        elif state == "failed" and not self.connected.is_set():
            await self.close(
                "ICE failed before connecting: no candidate pair worked"
                " (check http.host_addresses and http.ice_servers)"
            )
        elif state in ("failed", "closed"):
            await self.close(f"peer connection {state}")


class WhipSessions:
    """Every live WHIP session of a node: create, delete, close all."""

    def __init__(
        self,
        hub: WebRTCHub,
        *,
        ice_servers: list[str],
        connect_timeout: float = CONNECT_TIMEOUT_S,
    ) -> None:
        self.hub = hub
        self.connect_timeout = connect_timeout
        self.ice_servers = ice_servers
        self.sessions: dict[str, WhipSession] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def create(self, stream: str, body: bytes) -> tuple[WhipSession, str]:
        """A new session publishing to ``stream``; WhipError 404 or 409, or 400 on a bad offer.

        The offer is checked before the stream is taken, so a bad one never holds it.
        """
        source = self.hub.sources.get(stream)
        if source is None:
            raise WhipError(404, f"no webrtc stream {stream!r}")
        if source.busy:
            raise WhipError(409, f"stream {stream!r} already has a publisher")
        try:
            offer_sdp = parse_offer(body)
        except BadOffer as e:
            raise WhipError(400, str(e)) from None
        session = WhipSession(source, config=rtc_configuration(self.ice_servers))
        source.attach(session.feed)  # no await since the busy check: nobody came between
        self.sessions[session.id] = session
        watch = asyncio.get_running_loop().create_task(self._watch(session))
        self._tasks.add(watch)
        watch.add_done_callback(self._tasks.discard)
        try:
            answer = await session.answer(offer_sdp)
        except WhipError:
            await self._end(session, "failed to answer")
            raise
        except asyncio.CancelledError:  # the publisher hung up while we answered
            await self._end(session, "publisher went away before the answer")
            raise
        except Exception as e:  # aiortc raises ValueError, AssertionError... on bad SDP
            await self._end(session, "bad offer")
            raise WhipError(400, f"bad SDP offer: {one_line(e)}") from None
        log.debug("stream %s: answered webrtc publisher %s", stream, session.id[:8])
        return session, answer

    async def _watch(self, session: WhipSession) -> None:
        """End a session that never connects; forget it once it is closed."""
        try:
            async with asyncio.timeout(self.connect_timeout):
                await session.settled.wait()
        except TimeoutError:
            await self._end(
                session,
                f"not connected within {self.connect_timeout:g} s"
                f" (ICE {session.pc.iceConnectionState})",
            )
        try:
            await session.closed.wait()
        finally:
            self.sessions.pop(session.id, None)

    async def _end(self, session: WhipSession, why: str) -> None:
        self.sessions.pop(session.id, None)
        await session.close(why)

    async def delete(self, stream: str, session_id: str) -> None:
        session = self.sessions.get(session_id)
        if session is None or session.stream != stream:
            raise WhipError(404, "no such session")
        await self._end(session, "DELETE by the publisher")

    async def close_all(self, reason: str = "server shutdown") -> None:
        for s in list(self.sessions.values()):
            await s.close(reason)
