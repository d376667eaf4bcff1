"""REST routes of a broadcast's lifecycle, and the lifecycle fields of SendMessage.

* ``GET /v1/broadcasts?status=running&status=paused&bot=&page_size=&page_token=`` —
  ``{"broadcasts": [...], "next_page_token": ""}``, newest first (``outcome_counts`` empty),
  of the bots the token may use (``bot``: only that one; 403 if the token may not use it).
* ``POST /v1/broadcasts/{id}/cancel``, ``/pause``, ``/resume``, ``/recall`` (no body) — 200 and the
  broadcast; a move its state does not allow is 409 problem+json whose ``state`` member (and
  ``detail``) names the current state. The move is recorded with the caller's token name
  (``actions`` in the answer). A broadcast of a bot the token may not use is 404, as one
  that does not exist.
* ``POST /v1/broadcasts/{id}/edit`` with ``{"message", "parse_mode", "entities",
  "reply_markup", "media_url"}`` — 200 and the broadcast at its new ``content_version``
  (:mod:`tgbroadcast.core.rules.edits` says what an edit replaces); 400 for content the
  broadcast cannot take, 409 for a recalling or recalled broadcast or a forward.
* SendMessage (``POST /send-message``, ``POST /v1/broadcasts``): ``send_at`` (RFC 3339) and
  the idempotency key, as the ``Idempotency-Key`` header or the body field
  ``idempotency_key`` (both given and different: 400). A replay answers 202 with the same
  body and ``"replayed": true``; the key reused with another request is 409.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tgbroadcast.core.domain.errors import InvalidArgument
from tgbroadcast.core.rules.schedule import parse_timestamp
from tgbroadcast.core.service.broadcasting import Accepted
from tgbroadcast.server.auth import bot_for, current_caller_name, visible_bots
from tgbroadcast.server.rest import content, params, rendering

IDEMPOTENCY_HEADER = "Idempotency-Key"


def send_options(
    request: web.Request, *, idempotency_key: str | None, send_at: str | None
) -> dict[str, Any]:
    """The ``SendRequest`` fields ``idempotency_key`` and ``send_at`` from the header and the
    body's fields."""
    header = request.headers.get(IDEMPOTENCY_HEADER)
    if header is not None and idempotency_key is not None and header != idempotency_key:
        raise InvalidArgument.single(
            "idempotency_key",
            f"differs from the {IDEMPOTENCY_HEADER} header; give the key once",
        )
    key = idempotency_key if idempotency_key is not None else header
    if key is not None and not key:
        raise InvalidArgument.single("idempotency_key", "must not be empty")
    return {
        "idempotency_key": key or "",
        "send_at": None if send_at is None else parse_timestamp("send_at", send_at),
    }


def accepted_response(accepted: Accepted) -> web.Response:
    """202 with ``{"broadcast_id", "status", "total"}``, plus ``"replayed": true`` when an
    earlier request with the same idempotency key created the broadcast."""
    broadcast = accepted.broadcast
    body: dict[str, Any] = {
        "broadcast_id": broadcast.id,
        "status": broadcast.status.value,
        "total": broadcast.total,
    }
    if accepted.replayed:
        body["replayed"] = True
    return web.json_response(
        body,
        status=202,
        headers={"Location": f"/v1/broadcasts/{broadcast.id}"},
    )


async def list_broadcasts(request: web.Request) -> web.Response:
    params.check_query(request, params.PAGE_PARAMETERS | {"status", "bot"})
    bot = params.single(request, "bot") or ""
    try:
        page = await params.service(request).list_broadcasts(
            # Repeated or comma-separated, as the other lists' filters.
            statuses=[
                name.strip()
                for value in request.query.getall("status", [])
                for name in value.split(",")
                if name.strip()
            ],
            page_size=params.page_size(request),
            page_token=params.page_token(request),
            bot=bot_for(bot) if bot else "",
            visible=visible_bots(),
        )
    except InvalidArgument as exc:  # the query parameter is "status", repeated
        raise params.renamed(exc, (("statuses", "status"),)) from None
    return web.json_response(
        {
            "broadcasts": [
                rendering.listed_broadcast_json(broadcast) for broadcast in page.broadcasts
            ],
            "next_page_token": page.next_page_token,
        }
    )


async def cancel_broadcast(request: web.Request) -> web.Response:
    broadcast_id = params.path_id(request, "broadcast_id")
    params.check_query(request)
    return web.json_response(
        rendering.listed_broadcast_json(
            await params.service(request).cancel_broadcast(
                broadcast_id, actor=current_caller_name(), visible=visible_bots()
            )
        )
    )


async def pause_broadcast(request: web.Request) -> web.Response:
    broadcast_id = params.path_id(request, "broadcast_id")
    params.check_query(request)
    return web.json_response(
        rendering.listed_broadcast_json(
            await params.service(request).pause_broadcast(
                broadcast_id, actor=current_caller_name(), visible=visible_bots()
            )
        )
    )


async def resume_broadcast(request: web.Request) -> web.Response:
    broadcast_id = params.path_id(request, "broadcast_id")
    params.check_query(request)
    return web.json_response(
        rendering.listed_broadcast_json(
            await params.service(request).resume_broadcast(
                broadcast_id, actor=current_caller_name(), visible=visible_bots()
            )
        )
    )


async def recall_broadcast(request: web.Request) -> web.Response:
    broadcast_id = params.path_id(request, "broadcast_id")
    params.check_query(request)
    return web.json_response(
        rendering.listed_broadcast_json(
            await params.service(request).recall_broadcast(
                broadcast_id, actor=current_caller_name(), visible=visible_bots()
            )
        )
    )


async def edit_broadcast(request: web.Request) -> web.Response:
    broadcast_id = params.path_id(request, "broadcast_id")
    params.check_query(request)
    body = await params.json_body(request, content.EditBody)
    return web.json_response(
        rendering.listed_broadcast_json(
            await params.service(request).edit_broadcast(
                broadcast_id, body.value(), actor=current_caller_name(), visible=visible_bots()
            )
        )
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/broadcasts", list_broadcasts)
    app.router.add_post("/v1/broadcasts/{broadcast_id}/cancel", cancel_broadcast)
    app.router.add_post("/v1/broadcasts/{broadcast_id}/pause", pause_broadcast)
    app.router.add_post("/v1/broadcasts/{broadcast_id}/resume", resume_broadcast)
    app.router.add_post("/v1/broadcasts/{broadcast_id}/recall", recall_broadcast)
    app.router.add_post("/v1/broadcasts/{broadcast_id}/edit", edit_broadcast)
