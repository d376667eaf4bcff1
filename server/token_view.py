"""What the calling API token may do, for a client to show only that: ``GET /v1/token`` and
``GetToken`` both answer :func:`describe`.

Any valid token may ask (no scope needed); the answer describes that token only: its
configured name (never the token), its scopes (sorted), the bots it may use as configured
(``["*"]``: every bot), and the bots it may use that the service knows, by name, each with
its sending rates (messages per second), so a dashboard can show a broadcast's rate against
its bot's limit without the scope ``bots:admin``. A server that manages no bots lists none.

May import: :mod:`tgbroadcast.core.domain`, :mod:`tgbroadcast.core.bots`,
:mod:`tgbroadcast.server.auth`.
"""

from __future__ import annotations

from dataclasses import dataclass

from tgbroadcast.core.bots.service import BotService, everyone
from tgbroadcast.core.domain.access import ALL_BOTS, SCOPES
from tgbroadcast.server.auth import CALLER


@dataclass(frozen=True, slots=True)
class BotLimit:
    """A bot's sending rates, messages per second."""

    name: str
    rate_limit: float
    paid_rate_limit: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenView:
    """The calling token as :func:`describe` tells it."""

    name: str
    scopes: tuple[str, ...]
    bots: tuple[str, ...]
    bot_limits: tuple[BotLimit, ...]


async def describe(bots: BotService | None) -> TokenView:
    """The calling token (:data:`~tgbroadcast.server.auth.CALLER`); without a caller (a server
    with no token check: a test's) every request may do anything."""
    caller = CALLER.get()
    limits: tuple[BotLimit, ...] = ()
    if bots is not None:
        visible = everyone if caller is None else caller.may_use
        limits = tuple(
            BotLimit(bot.name, bot.rate_limit, bot.paid_rate_limit)
            for bot in await bots.list(visible=visible)
        )
    if caller is None:
        return TokenView(name="", scopes=tuple(sorted(SCOPES)), bots=(ALL_BOTS,), bot_limits=limits)
    return TokenView(
        name=caller.token_name,
        scopes=tuple(sorted(caller.scopes)),
        bots=tuple(caller.bots),
        bot_limits=limits,
    )
