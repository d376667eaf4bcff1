"""REST routes for users: each bot's own (``bot`` in the body, ``?bot=`` elsewhere; absent:
the token's only bot, else ``default``; a bot the token may not use is 403).

* ``POST /v1/users`` — upsert users: ``{"users": [{"id", "username", ...,"tags"}], "bot"}``
  → ``{"upserted": N}``.
* ``GET /v1/users`` — a page of users, filtered by ``tag``, ``language_code``,
  ``active_only``.
* ``GET /v1/users/{user_id}`` — the user (404 problem when unknown).
* ``DELETE /v1/users/{user_id}`` — forget the user and its tags: 204 (404 when unknown).
* ``POST /v1/users/import?bot=`` — a ``text/csv`` body (see
  :mod:`tgbroadcast.server.rest.users_csv`), read as a stream and committed every 10,000
  rows: ``{"imported": N}``. A bad line answers 400 naming it (``line 17.id``); the chunks
  before the one holding it stay committed and the problem's ``imported`` says how many
  users they held.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from pydantic import BaseModel, ConfigDict

from tgbroadcast.core.domain.errors import ImportRefused, InvalidArgument
from tgbroadcast.core.domain.model import UserFilter, UserProfile
from tgbroadcast.server.auth import bot_for
from tgbroadcast.server.rest import params, rendering
from tgbroadcast.server.rest.users_csv import csv_chunks

logger = logging.getLogger(__name__)

CSV_TYPES = frozenset({"text/csv", "application/csv"})
USER_PATH = "/v1/users/{user_id:(?!import$)[^/]+}"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class UserBody(_Body):
    id: int
    username: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    language_code: str | None = None
    tags: list[str] = []
    """Replaces the user's tags: an upsert without ``tags`` leaves the user with none."""


class UpsertUsersBody(_Body):
    users: list[UserBody]
    bot: str = ""


def add_routes(app: web.Application) -> None:
    """Register the routes above on ``app`` (made by
    :func:`tgbroadcast.server.rest.app.create_app`)."""
    app.router.add_post("/v1/users", upsert_users)
    app.router.add_get("/v1/users", list_users)
    app.router.add_post("/v1/users/import", import_users)
    # Not ``import``: ``GET /v1/users/import`` is a 405 (Allow: POST), not a bad user id.
    app.router.add_get(USER_PATH, get_user)
    app.router.add_delete(USER_PATH, delete_user)


async def upsert_users(request: web.Request) -> web.Response:
    params.check_query(request)
    body = await params.json_body(request, UpsertUsersBody)
    bot = bot_for(body.bot)
    count = await params.service(request).upsert_users(
        [
            UserProfile(
                id=u.id,
                username=u.username,
                first_name=u.first_name,
                last_name=u.last_name,
                language_code=u.language_code,
                tags=tuple(u.tags),
            )
            for u in body.users
        ],
        bot=bot,
    )
    return web.json_response({"upserted": count})


_USER_FILTER_PARAMETERS = (("filter.tags", "tag"), ("filter.language_codes", "language_code"))


async def list_users(request: web.Request) -> web.Response:
    """``?tag=..&tag=..`` (any of), ``?language_code=..`` (any of), ``?active_only=true``.
    Violations name the query parameter (``tag[1]``), not the proto's ``filter.tags[1]``."""
    params.check_query(
        request, params.PAGE_PARAMETERS | {"tag", "language_code", "active_only", "bot"}
    )
    page_size = params.page_size(request)
    active_only = params.flag(request, "active_only")
    bot = _bot(request)
    try:
        page = await params.service(request).list_users(
            page_size=page_size,
            page_token=params.page_token(request),
            user_filter=UserFilter(
                tags=tuple(request.query.getall("tag", ())),
                language_codes=tuple(request.query.getall("language_code", ())),
            ),
            active_only=active_only,
            bot=bot,
        )
    except InvalidArgument as exc:
        raise params.renamed(exc, _USER_FILTER_PARAMETERS) from None
    return web.json_response(
        {
            "users": [rendering.user_json(u) for u in page.users],
            "next_page_token": page.next_page_token,
        }
    )


async def get_user(request: web.Request) -> web.Response:
    user_id = params.path_chat_id(request, "user_id")
    params.check_query(request, _BOT)
    user = await params.service(request).get_user(user_id, bot=_bot(request))
    return web.json_response(rendering.user_json(user))


async def delete_user(request: web.Request) -> web.Response:
    user_id = params.path_chat_id(request, "user_id")
    params.check_query(request, _BOT)
    await params.service(request).delete_user(user_id, bot=_bot(request))
    return web.Response(status=204)


async def import_users(request: web.Request) -> web.Response:
    params.check_query(request, _BOT)
    params.require_content_type(request, *sorted(CSV_TYPES, reverse=True))
    bot = _bot(request)
    try:
        imported = await params.service(request).import_users(csv_chunks(_lines(request)), bot=bot)
    except ImportRefused as exc:
        return _import_refused_problem(exc)
    return web.json_response({"imported": imported})


_BOT = frozenset({"bot"})


def _bot(request: web.Request) -> str:
    """The bot ``?bot=`` names, resolved for the caller (:func:`bot_for`)."""
    return bot_for(params.single(request, "bot") or "")


async def _lines(request: web.Request) -> AsyncIterator[bytes]:
    """The body's lines as they arrive (aiohttp buffers at most one line plus its window)."""
    number = 0
    while True:
        try:
            line = await request.content.readline()
        except (ValueError, LineTooLong):  # longer than aiohttp's read buffer (its releases
            # differ in what they raise)
            raise InvalidArgument.single(f"line {number + 1}", "is too long") from None
        if not line:
            return
        number += 1
        yield line


def _import_refused_problem(exc: ImportRefused) -> web.Response:
    """The usual 400 problem, plus how many users the chunks before the bad one imported."""
    bounded = params.bounded(exc)
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus.BAD_REQUEST.phrase,
        "status": 400,
        "detail": f"{bounded} (the {exc.imported} users before it were imported)",
        "errors": [{"field": v.field, "message": v.description} for v in bounded.violations],
        "imported": exc.imported,
    }
    return web.Response(status=400, text=json.dumps(body), content_type=rendering.PROBLEM_JSON)
