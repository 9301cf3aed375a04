"""The dashboard's HTTP routes, added to the node's server by :func:`dashboard_routes`.

    GET /                               the dashboard (every stream: frame, label, lights,
                                        timeline; the event list)
    GET /static/vendor/{name}           vendored browser libraries (uPlot, VENDORED.md)
    GET /api/streams                    every stream's state (:class:`StreamBoard`)
    GET /api/streams/{stream}/recent    its recent scores, for a timeline opened late

The WebRTC publisher page, ``/`` before, is at ``GET /publish`` (the server's own).
The pages are static files of the package and read everything else from the API, with
the token as ``?token=`` when the node has one (they take it from the page's URL:
``/#token=T`` or ``/?token=T``). The ``/api`` routes need the token as every ``/api``
route does; the pages and static files do not (they hold nothing of the node's).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files

from aiohttp import web

from streamer.web.board import StreamBoard

STATIC = files("streamer.web") / "static"
TYPES = {".js": "text/javascript", ".css": "text/css", ".md": "text/markdown"}


def dashboard_routes(
    board: StreamBoard, *, node: str, require_token: Callable[[web.Request], None]
) -> list[web.RouteDef]:
    """The routes above; ``require_token`` raises 401 for a request without the token."""

    async def dashboard(request: web.Request) -> web.StreamResponse:
        page = (STATIC / "dashboard.html").read_bytes()
        return web.Response(body=page, content_type="text/html", charset="utf-8")

    async def vendor(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        kind = next((t for ext, t in TYPES.items() if name.endswith(ext)), None)
        path = STATIC / "vendor" / name
        if (
            kind is None
            or "/" in name
            or "\\" in name
            or name.startswith(".")
            or not path.is_file()
        ):
            raise web.HTTPNotFound()
        return web.Response(body=path.read_bytes(), content_type=kind, charset="utf-8")

    async def streams(request: web.Request) -> web.StreamResponse:
        require_token(request)
        return web.json_response(board.streams_json(node))

    async def recent(request: web.Request) -> web.StreamResponse:
        require_token(request)
        stream = request.match_info["stream"]
        if stream not in board.views:
            raise web.HTTPNotFound(text=f"no stream {stream!r}\n")
        return web.json_response(board.recent_json(stream))

    return [
        web.get("/", dashboard),
        web.get("/static/vendor/{name}", vendor),
        web.get("/api/streams", streams),
        web.get("/api/streams/{stream}/recent", recent),
    ]
