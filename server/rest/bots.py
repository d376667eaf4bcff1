"""REST routes for the bots (scope ``bots:admin``), over
:class:`~tgbroadcast.core.bots.service.BotService`.

* ``POST /v1/bots`` — ``{"name", "token", "rate_limit"?, "paid_rate_limit"?, "api_url"?}``:
  the token is checked with Telegram's ``getMe`` (400 with Telegram's description on the
  field ``token`` when it fails) and stored sealed; 201 and the bot, never its token. 409 for
  a name or token already taken, or without ``server.secret_key``; 403 for a name the API
  token may not use.
* ``GET /v1/bots`` — ``{"bots": [...]}``: the bots the API token may use, by name.
* ``GET /v1/bots/{name}`` — the bot; 404 when unknown or not the API token's.
* ``DELETE /v1/bots/{name}`` — 204; 409 while it has unfinished broadcasts, or for a bot
  configured in ``bots:`` / ``telegram.token``.

A bot is ``{"name", "bot_id", "username", "rate_limit", "paid_rate_limit", "api_url",
"source", "created_at"}``: ``source`` is ``"config"`` or ``"api"``, ``created_at`` ``null``
for a configured bot.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from tgbroadcast.core.bots.service import BotInfo, BotService, NewBot, Visible, everyone
from tgbroadcast.core.domain.errors import FailedPrecondition
from tgbroadcast.server.auth import CALLER, current_caller_name
from tgbroadcast.server.rest import params, rendering

BOTS_KEY: Final = web.AppKey("bots", BotService)
BOT_PATH: Final = "/v1/bots/{name}"
Handler = Callable[[web.Request], Awaitable[web.Response]]


class CreateBotBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str
    token: str = Field(repr=False)
    rate_limit: float | None = None
    """Messages per second; absent, null or 0: ``telegram.rate_limit``."""
    paid_rate_limit: float | None = None
    api_url: str | None = None
    """Absent, null or empty: ``telegram.api_url``."""


def add_routes(app: web.Application, bots: BotService | None) -> None:
    """The routes above; without ``bots`` they answer 409 (this server manages no bots)."""
    if bots is not None:
        app[BOTS_KEY] = bots
    app.router.add_post("/v1/bots", _conflicts(create_bot))
    app.router.add_get("/v1/bots", _conflicts(list_bots))
    app.router.add_get(BOT_PATH, _conflicts(get_bot))
    app.router.add_delete(BOT_PATH, _conflicts(delete_bot))


def _conflicts(handler: Handler) -> Handler:
    """``handler`` answering a refusal of the bot's state as a 409 without the ``state``
    member, which the document gives a broadcast's state only."""

    async def answer(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except FailedPrecondition as exc:
            return rendering.problem(409, params.clipped(str(exc)))

    return answer


def bot_json(bot: BotInfo) -> dict[str, Any]:
    return {
        "name": bot.name,
        "bot_id": bot.bot_id,
        "username": bot.username,
        "rate_limit": bot.rate_limit,
        "paid_rate_limit": bot.paid_rate_limit,
        "api_url": bot.api_url,
        "source": bot.source,
        "created_at": rendering.timestamp(bot.created_at),
    }


async def create_bot(request: web.Request) -> web.Response:
    params.check_query(request)
    body = await params.json_body(request, CreateBotBody)
    caller = CALLER.get()
    if caller is not None and not caller.may_use(body.name):
        detail = f"API token {caller.token_name} may not use bot {params.clipped(repr(body.name))}"
        return rendering.problem(403, detail)
    created = await _service(request).create(
        NewBot(
            name=body.name,
            token=body.token,
            rate_limit=body.rate_limit or None,
            paid_rate_limit=body.paid_rate_limit or None,
            api_url=body.api_url or None,
        ),
        created_by=current_caller_name(),
        visible=_visible(),
    )
    return web.json_response(
        bot_json(created), status=201, headers={"Location": f"/v1/bots/{created.name}"}
    )


async def list_bots(request: web.Request) -> web.Response:
    params.check_query(request)
    found = await _service(request).list(visible=_visible())
    return web.json_response({"bots": [bot_json(bot) for bot in found]})


async def get_bot(request: web.Request) -> web.Response:
    params.check_query(request)
    found = await _service(request).get(request.match_info["name"], visible=_visible())
    return web.json_response(bot_json(found))


async def delete_bot(request: web.Request) -> web.Response:
    params.check_query(request)
    await _service(request).delete(request.match_info["name"], visible=_visible())
    return web.Response(status=204)


def _service(request: web.Request) -> BotService:
    bots = request.app.get(BOTS_KEY)
    if bots is None:
        raise FailedPrecondition("this server does not manage bots", state="no_bots")
    return bots


def _visible() -> Visible:
    caller = CALLER.get()
    return everyone if caller is None else caller.may_use
