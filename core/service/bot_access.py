"""The bot a request acts for, as the service checks it, and the broadcasts a caller may see.

The transports decide which bot a request names and whether its API token may use it
(``tgbroadcast.server.auth``); the service checks the rest here:

* A request that acts as a bot (a send, a preview, a user upsert or import) names a bot the
  service knows (:class:`KnownBots`, the bot directory: configured bots and those created
  through the API, refreshed on a miss and when stale); else ``InvalidArgument`` on ``bot``,
  ``no bot named 'x'``. Reads and deletes of users only need a well-formed name: a deleted
  bot's users stay readable and erasable.
* A broadcast is found by its id alone. One whose bot is not among the caller's
  :data:`Visible` bots is ``NotFound`` with exactly the message of a broadcast that does not
  exist, so a caller learns nothing of other bots' broadcasts.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol, TypeAlias

from tgbroadcast.core.domain.errors import InvalidArgument
from tgbroadcast.core.domain.model import Broadcast
from tgbroadcast.core.rules.bot_names import FIELD, validate_bot_name
from tgbroadcast.core.store import Store
from tgbroadcast.core.store.broadcasts import not_found

Visible: TypeAlias = Collection[str] | None
"""The bots whose broadcasts a caller may see; None: every bot."""


class KnownBots(Protocol):
    """The bots the service may send with (``tgbroadcast.core.bots.directory.BotDirectory``)."""

    async def lookup(self, name: str) -> object | None:
        """The bot called ``name`` (refreshed on a miss, or when the snapshot is older than a
        few seconds and the bot is not configured), None if there is none."""
        ...

    def is_configured(self, name: str) -> bool:
        """Whether ``name`` is a configured bot (else it is stored, and may be deleted)."""
        ...


async def require_known(bots: KnownBots, name: str) -> str:
    """``name`` if it is a bot the service knows; ``InvalidArgument`` on ``bot`` otherwise."""
    validate_bot_name(name)
    if await bots.lookup(name) is None:
        raise InvalidArgument.single(FIELD, f"no bot named {name!r}")
    return name


def may_see(visible: Visible, bot: str) -> bool:
    return visible is None or bot in visible


async def visible_broadcast(
    store: Store, broadcast_id: int, visible: Visible, *, actions: bool = False
) -> Broadcast:
    """The broadcast; ``NotFound``, worded as for a missing one, if the caller may not see it."""
    broadcast = await store.get_broadcast(broadcast_id, actions=actions)
    if not may_see(visible, broadcast.bot):
        raise not_found(broadcast_id)
    return broadcast


async def check_visible(store: Store, broadcast_id: int, visible: Visible) -> None:
    """``NotFound`` as :func:`visible_broadcast`; no query for a caller who sees every bot
    (the operation that follows answers a missing broadcast itself)."""
    if visible is not None:
        await visible_broadcast(store, broadcast_id, visible)
