"""The node's HTTP server (aiohttp), on when the config has ``http.listen``.

    GET    /                       the dashboard (:mod:`streamer.web.dashboard`)
    GET    /publish                the WebRTC publisher page (static, shipped in the package)
    GET    /api/config             node, webrtc streams, ICE servers (for the page)
    POST   /whip/{stream}          WHIP offer (application/sdp) -> 201 + answer + Location
    DELETE /whip/{stream}/{id}     end that session
    PATCH  /whip/{stream}/{id}     405: no trickle ICE, the offer carries every candidate
    GET    /events/{stream}        live predictions as server-sent events
    GET    /api/streams/{stream}/latest.jpg  the newest snapshot (streamer.web.snapshots)
    GET    /metrics                Prometheus text format
    GET    /healthz                "ok" while the node runs
    GET    /api/events             the event history, newest first (:mod:`streamer.web.history`)
    GET    /api/events/{id}        one event; /api/events/{id}/snapshot.jpg its JPEG

With a token configured, /whip, /api and /events need it: ``Authorization: Bearer
<token>``, or ``?token=`` where a browser cannot set headers (EventSource). /metrics and
/healthz stay open for scrapers and probes.

Every connection costs a bounded amount: at most ``http.max_connections`` at a time (a
503 beyond), closed when it has not sent a whole request head within
``http.keepalive_timeout`` (idle or half-sent alike), a body read within
``http.read_timeout`` (408), bodies of at most ``MAX_SDP`` bytes, and malformed requests
logged one line per kind per minute (:mod:`streamer.web.guard`).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from dataclasses import dataclass
from importlib.resources import files
from typing import TYPE_CHECKING, Any

import aioice.ice
from aiohttp import web

from streamer.config import HttpConfig
from streamer.web.board import StreamBoard
from streamer.web.dashboard import dashboard_routes
from streamer.web.events import LiveEvents, TooManySubscribers
from streamer.web.guard import CappedHandlers, server_logger
from streamer.web.history import history_routes
from streamer.web.metrics import CONTENT_TYPE, Metrics
from streamer.web.whip import WhipError, WhipSessions

if TYPE_CHECKING:
    from streamer.history.store import EventStore
    from streamer.snapshots.snapshots import Snapshots

log = logging.getLogger(__name__)

MAX_SDP = 64 * 1024
PING_S = 15.0
STATIC = files("streamer.web") / "static"


@dataclass(frozen=True)
class StreamInfo:
    id: str
    video: bool  # its video is webrtc
    audio: bool
    text: bool  # it takes text events


def restrict_host_addresses(addresses: list[str]) -> None:
    """Make aioice offer only ``addresses`` as host candidates (it skips loopback otherwise).

    aioice has no per-connection setting for this; its module function is the hook.
    """
    chosen = list(addresses)

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = host_addresses


def choose_host_addresses(configured: list[str] | None) -> None:
    """The node's ICE host candidates: ``configured``, else every interface address but
    loopback (aioice's choice), else loopback: on a host with no other address, skipping
    it would leave the node no candidate at all and no publisher could ever connect."""
    if configured is not None:
        restrict_host_addresses(configured)
    elif not aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True):
        log.warning(
            "no network address but loopback: offering ICE host candidate 127.0.0.1 only, "
            "so only publishers on this host can connect (http.host_addresses chooses)"
        )
        restrict_host_addresses(["127.0.0.1"])


class WebServer:
    def __init__(
        self,
        cfg: HttpConfig,
        *,
        node: str,
        streams: list[StreamInfo],
        all_streams: list[str],
        whip: WhipSessions,
        events: LiveEvents,
        metrics: Metrics,
        store: EventStore | None = None,
        snapshots: Snapshots | None = None,
        board: StreamBoard | None = None,
    ) -> None:
        """``board``: the dashboard's view of the streams (without it ``/`` is the
        publisher page, as ``/publish``)."""
        self.cfg = cfg
        self.snapshots = snapshots  # /api/streams/{stream}/latest.jpg where present
        self.node = node
        self.streams = streams  # the webrtc ones
        self.all_streams = frozenset(all_streams)  # live events are served for every stream
        self.whip = whip
        self.events = events
        self.metrics = metrics
        self.store = store  # the event history (/api/events); None: no events configured
        self.board = board
        self._token = cfg.token()
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self.port = cfg.port  # the bound port once started (listen may say 0)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_SDP)
        if self.board is None:
            app.add_routes([web.get("/", self._index)])
        else:
            app.add_routes(
                dashboard_routes(self.board, node=self.node, require_token=self._require_token)
            )
        app.add_routes(
            [
                web.get("/publish", self._index),
                web.get("/static/{name}", self._static),
                web.get("/api/config", self._config),
                web.post("/whip/{stream}", self._whip_post),
                web.delete("/whip/{stream}/{session}", self._whip_delete),
                web.patch("/whip/{stream}/{session}", self._whip_patch),
                web.get("/events/{stream}", self._events),
                web.get("/metrics", self._metrics),
                web.get("/healthz", self._healthz),
            ]
        )
        app.add_routes(history_routes(self.store, self._require_token))
        if self.snapshots is not None:
            from streamer.web.snapshots import snapshot_routes

            app.add_routes(snapshot_routes(self.snapshots, self._require_token))
        return app

    async def start(self) -> None:
        choose_host_addresses(self.cfg.host_addresses)
        logger = server_logger("streamer.web.http")
        runner = web.AppRunner(
            self.app(), access_log=None, shutdown_timeout=1.0, handler_cancellation=True
        )
        await runner.setup()
        assert runner.server is not None
        # aiohttp's TCPSite has no connection cap: the listener's factory is ours
        handlers = CappedHandlers(
            runner.server, self.cfg.max_connections, logger,
            keepalive_timeout=self.cfg.keepalive_timeout, logger=logger, access_log=None,
        )  # fmt: skip
        try:
            listener = await asyncio.get_running_loop().create_server(
                handlers, self.cfg.host, self.cfg.port, reuse_address=True
            )
        except OSError as e:
            await runner.cleanup()
            raise OSError(f"http.listen {self.cfg.listen}: {e.strerror or e}") from None
        self._runner, self._listener = runner, listener
        if listener.sockets:  # the bound port when listen asked for 0
            self.port = int(listener.sockets[0].getsockname()[1])
        log.info("HTTP on %s:%d", self.cfg.host, self.port)

    async def stop(self) -> None:
        self.events.close()
        await self.whip.close_all()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()  # no new connections; the runner closes the open ones
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if listener is not None:
            await listener.wait_closed()

    # -- helpers ----------------------------------------------------------------------------
    def _authorized(self, request: web.Request) -> bool:
        if self._token is None:
            return True
        auth = request.headers.get("Authorization", "")
        given = auth[7:].strip() if auth[:7].lower() == "bearer " else request.query.get("token")
        return given is not None and hmac.compare_digest(given.encode(), self._token.encode())

    def _require_token(self, request: web.Request) -> None:
        if not self._authorized(request):
            raise web.HTTPUnauthorized(
                text="missing or wrong bearer token\n", headers={"WWW-Authenticate": "Bearer"}
            )

    # -- handlers ---------------------------------------------------------------------------
    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=(STATIC / "index.html").read_bytes(), content_type="text/html", charset="utf-8"
        )

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        types = {".js": "text/javascript", ".css": "text/css"}
        kind = next((t for ext, t in types.items() if name.endswith(ext)), None)
        path = STATIC / name
        if kind is None or "/" in name or not path.is_file():
            raise web.HTTPNotFound()
        return web.Response(body=path.read_bytes(), content_type=kind, charset="utf-8")

    async def _config(self, request: web.Request) -> web.StreamResponse:
        self._require_token(request)
        body: dict[str, Any] = {
            "node": self.node,
            "ice_servers": self.cfg.ice_servers,
            "streams": [
                {
                    "id": s.id,
                    "video": s.video,
                    "audio": s.audio,
                    "text": s.text,
                    "busy": self.whip.hub.sources[s.id].busy,
                }  # fmt: skip
                for s in self.streams
            ],
        }
        return web.json_response(body)

    async def _whip_post(self, request: web.Request) -> web.StreamResponse:
        self._require_token(request)
        stream = request.match_info["stream"]
        if request.content_type != "application/sdp":
            raise web.HTTPUnsupportedMediaType(text="expected Content-Type: application/sdp\n")
        try:
            async with asyncio.timeout(self.cfg.read_timeout):
                offer = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise web.HTTPRequestEntityTooLarge(MAX_SDP, request.content_length or 0) from None
        except TimeoutError:
            raise web.HTTPRequestTimeout(
                text=f"request body not received within {self.cfg.read_timeout:g} s\n"
            ) from None
        try:
            session, answer = await self.whip.create(stream, offer)
        except WhipError as e:
            raise _http_error(e) from None
        location = f"/whip/{stream}/{session.id}"
        return web.Response(
            status=201, text=answer, content_type="application/sdp",
            headers={"Location": location},
        )  # fmt: skip

    async def _whip_delete(self, request: web.Request) -> web.StreamResponse:
        self._require_token(request)
        try:
            await self.whip.delete(request.match_info["stream"], request.match_info["session"])
        except WhipError as e:
            raise _http_error(e) from None
        return web.Response(status=200)

    async def _whip_patch(self, request: web.Request) -> web.StreamResponse:
        self._require_token(request)
        raise web.HTTPMethodNotAllowed("PATCH", ["DELETE"], text="no trickle ICE\n")

    async def _events(self, request: web.Request) -> web.StreamResponse:
        self._require_token(request)
        stream = request.match_info["stream"]
        if stream not in self.all_streams:
            raise web.HTTPNotFound(text=f"no stream {stream!r}\n")
        try:
            async with self.events.subscribe(stream) as sub:
                resp = web.StreamResponse(
                    headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
                )
                await resp.prepare(request)
                await resp.write(b": streamer live predictions\n\n")
                while True:
                    payload = await sub.next(PING_S)
                    if sub.closed.is_set():
                        break
                    await resp.write(b": ping\n\n" if payload is None else _sse(payload))
        except TooManySubscribers as e:
            raise web.HTTPServiceUnavailable(text=f"{e}\n") from None
        except ConnectionResetError:
            pass  # the browser went away
        return resp

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def _healthz(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok\n")


def _sse(payload: bytes) -> bytes:
    # a prediction is one line of JSON; split defensively so the framing always holds
    lines = payload.decode("utf-8", "replace").splitlines() or [""]
    return "".join(f"data: {line}\n" for line in lines).encode() + b"\n"


def _http_error(e: WhipError) -> web.HTTPException:
    kinds: dict[int, type[web.HTTPException]] = {
        400: web.HTTPBadRequest,
        404: web.HTTPNotFound,
        409: web.HTTPConflict,
    }
    cls = kinds.get(e.status, web.HTTPInternalServerError)
    return cls(text=f"{e}\n")
