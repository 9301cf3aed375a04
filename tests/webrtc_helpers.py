"""A WHIP publisher in Python (aiortc), and the config of a node that takes webrtc.

The publisher sends synthetic video (moving bars, 320x240 at 10 fps) and a 440 Hz tone
(48 kHz, 20 ms frames), plus a ``text`` data channel, to ``POST /whip/{stream}``.
"""

from __future__ import annotations

import asyncio
import fractions
import math
from pathlib import Path
from typing import Any

import aiohttp
import aioice.ice
import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

VIDEO_CLOCK = 90_000
AUDIO_RATE = 48_000
AUDIO_SAMPLES = 960  # 20 ms


def loopback_only() -> None:
    """This process's ICE agents offer 127.0.0.1 only (as the node's host_addresses do)."""
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


def webrtc_config(
    *, mqtt_url: str, http_port: int, token_file: Path | None, node: str = "web"
) -> dict[str, Any]:
    http: dict[str, Any] = {
        "listen": f"127.0.0.1:{http_port}",
        "ice_servers": [],
        "host_addresses": ["127.0.0.1"],
    }
    if token_file is not None:
        http["token_file"] = str(token_file)
    return {
        "node": node,
        "mqtt": {"url": mqtt_url, "stats_interval": 1.0},
        "http": http,
        "window": {"length": 2.0, "hop": 0.5, "max_delay": 0.5},
        "streams": [
            {"id": "cam", "video": "webrtc", "audio": "webrtc"},
            {"id": "mic", "audio": "webrtc", "text": []},
        ],
    }


class Bars(MediaStreamTrack):
    kind = "video"

    def __init__(self, fps: int = 10) -> None:
        super().__init__()
        self.fps = fps
        self.n = 0
        self._start: float | None = None

    async def recv(self) -> av.VideoFrame:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        due = self._start + self.n / self.fps
        await asyncio.sleep(max(0.0, due - loop.time()))  # pacing a live source, not a sync
        img = np.zeros((240, 320, 3), dtype=np.uint8)
        x = (self.n * 8) % 320
        img[:, x : x + 40] = (255, 255, 255)
        img[100:140, :, 1] = 200
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = round(self.n * VIDEO_CLOCK / self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.n += 1
        return frame


class Tone(MediaStreamTrack):
    kind = "audio"

    def __init__(self, hz: float = 440.0) -> None:
        super().__init__()
        self.hz = hz
        self.n = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        due = self._start + self.n * AUDIO_SAMPLES / AUDIO_RATE
        await asyncio.sleep(max(0.0, due - loop.time()))  # pacing a live source, not a sync
        t = (self.n * AUDIO_SAMPLES + np.arange(AUDIO_SAMPLES)) / AUDIO_RATE
        pcm = (0.3 * 32767 * np.sin(2 * math.pi * self.hz * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = self.n * AUDIO_SAMPLES
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        self.n += 1
        return frame


class Publisher:
    """One WHIP publishing session from Python."""

    def __init__(self, base_url: str, stream: str, *, video: bool = True, audio: bool = True):
        self.base_url = base_url
        self.stream = stream
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        if video:
            self.pc.addTrack(Bars())
        if audio:
            self.pc.addTrack(Tone())
        self.channel = self.pc.createDataChannel("text")
        self.open = asyncio.Event()
        self.channel.on("open", self.open.set)
        self.location: str | None = None

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        assert self.pc.localDescription is not None
        return str(self.pc.localDescription.sdp)

    async def post(
        self, http: aiohttp.ClientSession, token: str | None
    ) -> tuple[int, str, dict[str, str]]:
        """POST the offer; on 201 apply the answer. (status, body, headers)."""
        headers = {"Content-Type": "application/sdp"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        sdp = await self.offer()
        url = f"{self.base_url}/whip/{self.stream}"
        async with http.post(url, data=sdp, headers=headers) as resp:
            body = await resp.text()
            if resp.status == 201:
                self.location = resp.headers["Location"]
                await self.pc.setRemoteDescription(RTCSessionDescription(body, "answer"))
            return resp.status, body, dict(resp.headers)

    async def delete(self, http: aiohttp.ClientSession, token: str | None) -> int:
        assert self.location is not None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with http.delete(self.base_url + self.location, headers=headers) as resp:
            return resp.status

    async def close(self) -> None:
        await self.pc.close()
