"""The event history over HTTP (:mod:`streamer.history.store`), under the /api token rules.

    GET /api/events?stream=&label=&since=&until=&limit=   {"events": [...], "count": n}
    GET /api/events/{id}                                  the event JSON
    GET /api/events/{id}/snapshot.jpg                     its JPEG (image/jpeg)

``since`` and ``until`` (epoch seconds) bound the events' ``start``, both inclusive;
``limit`` is 1-1000 (default 100); the events come newest first by start, each with
``"snapshot"``: its path, or null when it has none. A bad value is a 400 with its reason;
an unknown event or snapshot a 404; without ``events:`` configured every path is a 404.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar, cast

from aiohttp import web

from streamer.history import db as sql
from streamer.history.store import EventStore, StoreBusy

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
MAX_TEXT = 256  # stream, label, id: longer is no such thing
PARAMS = frozenset({"stream", "label", "since", "until", "limit", "token"})
T = TypeVar("T")
NO_HISTORY = "no event history: configure events:\n"


def history_routes(
    store: EventStore | None, require_token: Callable[[web.Request], None]
) -> list[web.RouteDef]:
    """The routes, for ``WebServer.app()``; ``require_token`` raises 401 when missing."""

    def open_store(request: web.Request) -> EventStore:
        require_token(request)
        if store is None:
            raise web.HTTPNotFound(text=NO_HISTORY)
        return store

    async def list_events(request: web.Request) -> web.StreamResponse:
        s = open_store(request)
        args = _query_args(request)
        rows = await _read(s, lambda db: sql.query(db, **args))
        events = [_with_link(text, snap) for text, snap in rows]
        return web.json_response({"events": events, "count": len(events)})

    async def by_id(request: web.Request, fn: Callable[[Any, str], T | None], what: str) -> T:
        """``fn(db, id)`` for the path's event id; 404 naming ``what`` when None."""
        s = open_store(request)
        eid = request.match_info["id"]
        got = None if len(eid) > MAX_TEXT else await _read(s, lambda db: fn(db, eid))
        if got is None:
            raise web.HTTPNotFound(text=f"no {what} {eid[:MAX_TEXT]!r}\n")
        return cast(T, got)

    async def one_event(request: web.Request) -> web.StreamResponse:
        return web.json_response(_with_link(*await by_id(request, sql.get, "event")))

    async def snapshot(request: web.Request) -> web.StreamResponse:
        jpeg = await by_id(request, sql.snapshot, "snapshot of event")
        return web.Response(body=jpeg, content_type="image/jpeg",
                            headers={"Cache-Control": "private, max-age=60"})  # fmt: skip

    return [
        web.get("/api/events", list_events),
        web.get("/api/events/{id}", one_event),
        web.get("/api/events/{id}/snapshot.jpg", snapshot),
    ]


async def _read(store: EventStore, fn: Callable[[Any], Any]) -> Any:
    try:
        return await store.read(fn)
    except StoreBusy as e:
        raise web.HTTPServiceUnavailable(text=f"{e}\n") from None


def _with_link(text: str, has_snapshot: bool) -> dict[str, Any]:
    ev: dict[str, Any] = json.loads(text)
    ev["snapshot"] = f"/api/events/{ev['id']}/snapshot.jpg" if has_snapshot else None
    return ev


def _query_args(request: web.Request) -> dict[str, Any]:
    """The query's filters, checked; 400 with the first problem."""
    q = request.query
    unknown = sorted(set(q) - PARAMS)
    if unknown:
        _bad(f"unknown parameter {unknown[0]!r} (stream, label, since, until, limit)")
    args: dict[str, Any] = {"limit": DEFAULT_LIMIT}
    for key in ("stream", "label"):
        if key in q:
            if not q[key] or len(q[key]) > MAX_TEXT:
                _bad(f"{key}: expected 1-{MAX_TEXT} characters")
            args[key] = q[key]
    for key in ("since", "until"):
        if key in q:
            try:
                v = float(q[key])
            except ValueError:
                v = math.nan
            if not math.isfinite(v):
                _bad(f"{key}: expected epoch seconds, got {q[key][:40]!r}")
            args[key] = v
    if "limit" in q:
        raw = q["limit"]
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
            _bad(f"limit: expected an integer 1-{MAX_LIMIT}, got {raw[:40]!r}")
        args["limit"] = int(raw)
    if "since" in args and "until" in args and args["since"] > args["until"]:
        _bad("since is after until")
    return args


def _bad(reason: str) -> NoReturn:
    raise web.HTTPBadRequest(text=f"{reason}\n")
