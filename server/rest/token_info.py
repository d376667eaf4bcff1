"""``GET /v1/token``: what the calling API token may do, for a client to show only that.

Any valid token may ask (no scope needed); the answer describes that token only —
``{"name", "scopes", "bots", "bot_limits"}``: its configured name (never the token), its
scopes (sorted), the bots it may use as configured (``["*"]``: every bot), and the bots it may
use that the service knows, by name, each with its sending rates (``rate_limit``,
``paid_rate_limit``: messages per second), so a dashboard can show a broadcast's rate against
its bot's limit without the scope ``bots:admin``. A server that manages no bots answers
``bot_limits: []``.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from tgbroadcast.core.bots.service import everyone
from tgbroadcast.core.domain.access import SCOPES
from tgbroadcast.server.auth import CALLER
from tgbroadcast.server.rest import bots, params

TOKEN_PATH: Final = "/v1/token"  # noqa: S105 (a route, not a secret)


def add_routes(app: web.Application) -> None:
    app.router.add_get(TOKEN_PATH, describe_token)


async def describe_token(request: web.Request) -> web.Response:
    params.check_query(request)
    caller = CALLER.get()
    # Without a caller (an app with no token check: a test's) every request may do anything.
    answer: dict[str, Any] = {"name": "", "scopes": sorted(SCOPES), "bots": ["*"], "bot_limits": []}
    if caller is not None:
        answer |= {
            "name": caller.token_name,
            "scopes": sorted(caller.scopes),
            "bots": list(caller.bots),
        }
    service = request.app.get(bots.BOTS_KEY)
    if service is not None:
        visible = everyone if caller is None else caller.may_use
        answer["bot_limits"] = [
            {
                "name": bot.name,
                "rate_limit": bot.rate_limit,
                "paid_rate_limit": bot.paid_rate_limit,
            }
            for bot in await service.list(visible=visible)
        ]
    return web.json_response(answer)
