"""``GET /v1/token``: what the calling API token may do (:mod:`tgbroadcast.server.token_view`,
which ``GetToken`` answers too), as ``{"name", "scopes", "bots", "bot_limits"}``; each of
``bot_limits`` is ``{"name", "rate_limit", "paid_rate_limit"}``."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from tgbroadcast.server.rest import bots, params
from tgbroadcast.server.token_view import describe as describe_caller_token

TOKEN_PATH: Final = "/v1/token"  # noqa: S105 (a route, not a secret)


def add_routes(app: web.Application) -> None:
    app.router.add_get(TOKEN_PATH, describe_token)


async def describe_token(request: web.Request) -> web.Response:
    params.check_query(request)
    view = await describe_caller_token(request.app.get(bots.BOTS_KEY))
    return web.json_response(
        {
            "name": view.name,
            "scopes": list(view.scopes),
            "bots": list(view.bots),
            "bot_limits": [
                {
                    "name": limit.name,
                    "rate_limit": limit.rate_limit,
                    "paid_rate_limit": limit.paid_rate_limit,
                }
                for limit in view.bot_limits
            ],
        }
    )
