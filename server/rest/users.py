"""REST routes for single users and CSV imports (UpsertUsers and ListUsers are in
:mod:`tgbroadcast.server.rest.app`).

* ``GET /v1/users/{user_id}`` — the user (404 problem when unknown).
* ``DELETE /v1/users/{user_id}`` — forget the user and its tags: 204 (404 when unknown).
* ``POST /v1/users/import`` — a ``text/csv`` body (see :mod:`tgbroadcast.server.rest.users_csv`),
  read as a stream and committed every 10,000 rows: ``{"imported": N}``. A bad line answers 400
  naming it (``line 17.id``); the chunks before the one holding it stay committed and the problem's
  ``imported`` says how many users they held.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any

from aiohttp import web

from tgbroadcast.core.domain.errors import ImportRefused, InvalidArgument
from tgbroadcast.server.rest import params, rendering
from tgbroadcast.server.rest.users_csv import csv_chunks

logger = logging.getLogger(__name__)

CSV_TYPES = frozenset({"text/csv", "application/csv"})


def add_routes(app: web.Application) -> None:
    """Register the routes above on ``app`` (made by
    :func:`tgbroadcast.server.rest.app.create_app`)."""
    app.router.add_post("/v1/users/import", import_users)
    app.router.add_get("/v1/users/{user_id}", get_user)
    app.router.add_delete("/v1/users/{user_id}", delete_user)


async def get_user(request: web.Request) -> web.Response:
    user_id = params.path_chat_id(request, "user_id")
    params.check_query(request)
    user = await params.service(request).get_user(user_id)
    return web.json_response(rendering.user_json(user))


async def delete_user(request: web.Request) -> web.Response:
    user_id = params.path_chat_id(request, "user_id")
    params.check_query(request)
    await params.service(request).delete_user(user_id)
    return web.Response(status=204)


async def import_users(request: web.Request) -> web.Response:
    params.check_query(request)
    if request.content_type not in CSV_TYPES:
        raise web.HTTPUnsupportedMediaType(
            text=f"Content-Type must be text/csv, not {request.content_type}"
        )
    try:
        imported = await params.service(request).import_users(csv_chunks(_lines(request)))
    except ImportRefused as exc:
        return _import_refused_problem(exc)
    return web.json_response({"imported": imported})


async def _lines(request: web.Request) -> AsyncIterator[bytes]:
    """The body's lines as they arrive (aiohttp buffers at most one line plus its window)."""
    number = 0
    while True:
        try:
            line = await request.content.readline()
        except ValueError:  # a line longer than aiohttp's read buffer
            raise InvalidArgument.single(f"line {number + 1}", "is too long") from None
        if not line:
            return
        number += 1
        yield line


def _import_refused_problem(exc: ImportRefused) -> web.Response:
    """The usual 400 problem, plus how many users the chunks before the bad one imported."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus.BAD_REQUEST.phrase,
        "status": 400,
        "detail": str(exc),
        "errors": [{"field": v.field, "message": v.description} for v in exc.violations],
        "imported": exc.imported,
    }
    return web.Response(status=400, text=json.dumps(body), content_type=rendering.PROBLEM_JSON)
