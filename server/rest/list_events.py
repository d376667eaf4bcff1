"""``GET /v1/broadcasts/events[?bot=shop&status=running&status=paused]``: the list of
broadcasts, live, as Server-Sent Events — ``WatchBroadcasts`` over HTTP
(:mod:`tgbroadcast.core.service.list_watching`).

* ``event: ready`` (``data: {}``) first: from then on every change is streamed, so a client
  reads ``GET /v1/broadcasts`` now (and again after every reconnect: the stream does not
  resume, and has no event ids);
* ``event: broadcast`` per change — a broadcast created, moved to another status, or counting
  outcomes (at most once a second per broadcast) — its data the broadcast as
  ``GET /v1/broadcasts`` lists it;
* ``: heartbeat`` comments while nothing changes; ``event: shutdown`` when the server drains
  (reconnect elsewhere); ``event: error`` if following stopped (reconnect).

Filters as the list's: ``bot`` (a bot the token may use; 403 otherwise) and ``status``
(repeated or comma-separated; a broadcast is streamed when its new status is one of them).
The stream holds a place among the server's open watch streams: 429 when
``server.max_watchers`` are open, 503 while draining. Needs the scope ``broadcasts:read``; a
token sees only its bots' broadcasts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import suppress
from typing import Final

from aiohttp import hdrs, web

from tgbroadcast.core.domain.errors import InvalidArgument
from tgbroadcast.core.domain.model import Broadcast
from tgbroadcast.core.service.list_watching import Ready
from tgbroadcast.server.auth import bot_for, visible_bots
from tgbroadcast.server.rest import params, rendering
from tgbroadcast.server.rest.reports import (
    WATCHERS_KEY,
    sse_event,
    sse_response,
    stream_events,
)
from tgbroadcast.server.streams import ReadAhead, TooManyWatchers, WatchRefused, one_by_one

logger = logging.getLogger(__name__)

LIST_EVENTS_PATH: Final = "/v1/broadcasts/events"
_AHEAD: Final = 64
"""Broadcasts read ahead of a slow client (the core keeps only each one's latest beyond)."""


def add_routes(app: web.Application) -> None:
    """Register the route; before ``/v1/broadcasts/{broadcast_id}``, which it would match."""
    app.router.add_get(LIST_EVENTS_PATH, watch_list)


def _render(items: Sequence[object]) -> tuple[bytes, bool]:
    """The events of a batch of changed broadcasts; an error (NATS gone) ends the stream."""
    chunk: list[bytes] = []
    for item in items:
        if not isinstance(item, Broadcast):  # the core failed: the client reconnects
            name = type(item).__name__
            logger.warning("list stream stopped", extra={"error": name})
            chunk.append(sse_event("error", {"detail": "the stream stopped; reconnect"}))
            return b"".join(chunk), True
        chunk.append(sse_event("broadcast", rendering.listed_broadcast_json(item)))
    return b"".join(chunk), False


def _statuses(request: web.Request) -> list[str]:
    return [
        name.strip()
        for value in request.query.getall("status", [])
        for name in value.split(",")
        if name.strip()
    ]


async def watch_list(request: web.Request) -> web.StreamResponse:
    params.check_query(request, frozenset({"bot", "status"}))
    bot = params.single(request, "bot") or ""
    updates = params.service(request).watch_broadcasts(
        visible=visible_bots(), bot=bot_for(bot) if bot else "", statuses=_statuses(request)
    )
    try:
        try:
            first = await anext(updates)  # bad input fails here, as a problem
        except InvalidArgument as exc:  # the query parameter is "status", repeated
            raise params.renamed(exc, (("statuses", "status"),)) from None
        assert isinstance(first, Ready)
        try:
            slot = request.app[WATCHERS_KEY].acquire()
        except WatchRefused as exc:
            await updates.aclose()
            return rendering.problem(429 if isinstance(exc, TooManyWatchers) else 503, str(exc))
        if request.method == hdrs.METH_HEAD:  # the GET's answer, without its stream
            slot.release()
            await updates.aclose()
            return sse_response()
    except BaseException:
        await updates.aclose()
        raise
    response = sse_response()
    ahead = ReadAhead(one_by_one(updates), ahead=_AHEAD, name="sse-watch-list")
    try:
        await response.prepare(request)
        await response.write(sse_event("ready", {}))
        await stream_events(request, response, slot, ahead, _render)
        with suppress(ConnectionResetError):
            await response.write_eof()
    except ConnectionResetError:
        pass  # the client went away
    finally:
        slot.release()
        await ahead.aclose()
    return response
