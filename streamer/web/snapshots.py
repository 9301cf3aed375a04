"""``GET /api/streams/{stream}/latest.jpg``: the newest JPEG of a stream's snapshot ring.

200 ``image/jpeg`` (``Cache-Control: no-store``; ``X-Snapshot-Time`` the frame's node-clock
time, epoch seconds), 404 for a stream without a ring or none taken yet. The token rules
of ``/api`` apply, ``?token=`` accepted (an ``<img>`` sends no header).
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from streamer.frames import NS
from streamer.snapshots.snapshots import Snapshots

LATEST = "/api/streams/{stream}/latest.jpg"


def snapshot_routes(
    snapshots: Snapshots, require_token: Callable[[web.Request], None]
) -> list[web.RouteDef]:
    async def latest(request: web.Request) -> web.StreamResponse:
        require_token(request)
        snap = snapshots.latest(request.match_info["stream"])
        if snap is None:
            raise web.HTTPNotFound(text="no snapshot of this stream yet\n")
        return web.Response(
            body=snap.jpeg, content_type="image/jpeg",
            headers={"Cache-Control": "no-store", "X-Snapshot-Time": f"{snap.pts_ns / NS:.3f}"},
        )  # fmt: skip

    return [web.get(LATEST, latest)]
