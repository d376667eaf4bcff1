"""The public route of tracked links: ``GET /c/{code}`` answers **302** to the link the code
stands for (see :mod:`tgbroadcast.core.rules.clicks`), without a token and whatever
``server.allowed_networks`` says: the recipients' browsers open it. **404** for a code the
service did not make (or a link an edit removed), **410** once the broadcast is older than
``tracking.retention_days``; **404** on a server without click tracking. A ``HEAD``, or a
request of Telegram's own link fetcher (``User-Agent: TelegramBot``), is answered the same
and counts no click."""

from __future__ import annotations

from typing import Final

from aiohttp import web
from yarl import URL

from tgbroadcast.core.domain.errors import Expired, NotFound
from tgbroadcast.core.service.clicks import UNKNOWN, ClickService
from tgbroadcast.server.rest import rendering

CLICK_ROUTE: Final = "/c/{code}"
CLICK_PREFIX: Final = "/c/"
CLICKS_KEY: Final = web.AppKey("clicks", ClickService)
_HEADERS: Final = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
"""Every click reaches the service (no cache), and the code stays out of the next site's
``Referer``."""


def add_routes(app: web.Application, clicks: ClickService | None) -> None:
    if clicks is not None:
        app[CLICKS_KEY] = clicks
    app.router.add_get(CLICK_ROUTE, open_link)


async def open_link(request: web.Request) -> web.StreamResponse:
    service = request.app.get(CLICKS_KEY)
    try:
        if service is None:
            raise NotFound(UNKNOWN)
        fetcher = request.headers.get("User-Agent", "").startswith("TelegramBot")
        url = await service.open(
            request.match_info["code"], count=request.method == "GET" and not fetcher
        )
    except Expired as exc:
        answer = rendering.problem(410, str(exc))
    except NotFound as exc:
        answer = rendering.problem(404, str(exc))
    else:
        answer = web.Response(status=302, headers={"Location": str(URL(url))})
    answer.headers.update(_HEADERS)
    return answer
