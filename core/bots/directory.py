"""Every bot the service may send with right now, by name.

:class:`BotDirectory` holds the configured bots (``telegram.token`` as ``default``, then
``bots:``) and the bots created through the API, whose tokens it opens with
``server.secret_key``. It is a snapshot: :meth:`BotDirectory.refresh` reloads the stored bots
(a bot created or deleted by another process shows up at the next refresh), and
:meth:`BotDirectory.lookup` refreshes on a miss, so a bot created a moment ago on another
server is found by the next request naming it, and when the snapshot is older than
:data:`MAX_AGE` seconds for a stored bot, so a bot deleted on another server is refused
within seconds by every server (a send of a bot deleted meanwhile is refused by the
database itself: :func:`tgbroadcast.core.store.bots.hold_live`).

Guarantees:

* A configured bot always wins: a stored bot with a configured bot's name is ignored (and
  logged once).
* A stored row no key opens (``server.secret_key`` missing, or the key that sealed it
  dropped) is logged once by name — never with any part of the row — and skipped; the
  other bots are served.
* A failed refresh (database down) raises and leaves the previous snapshot in place.
* Concurrent lookups that need a refresh share one instead of each reading the table; a
  stale one that fails keeps the bot it had.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from tgbroadcast.core.bots.sealing import Sealer
from tgbroadcast.core.config.settings import BotSettings, Settings
from tgbroadcast.core.domain.bots import StoredBot
from tgbroadcast.core.store import Store

logger = logging.getLogger(__name__)

MAX_AGE = 5.0
"""Seconds a lookup of a stored bot trusts the snapshot before reading the table again."""


class BotDirectory:
    """Configured bots first, then stored bots by name; see the module's docstring."""

    def __init__(self, settings: Settings, store: Store, *, max_age: float = MAX_AGE) -> None:
        self._settings = settings
        self._store = store
        self._sealer = Sealer(settings.server.secret_keys) if settings.server.secret_keys else None
        self._configured = {bot.name: bot for bot in settings.bots}
        self._stored: dict[str, BotSettings] = {}
        self._lock = asyncio.Lock()
        self._started = 0
        self._max_age = max_age
        self._loaded_at = -math.inf
        """When the last refresh read the table (``time.monotonic``)."""
        self._warned: set[str] = set()

    @property
    def sealer(self) -> Sealer | None:
        """What seals and opens stored tokens; None without ``server.secret_key``."""
        return self._sealer

    def get(self, name: str) -> BotSettings | None:
        """The bot called ``name`` in the current snapshot."""
        return self._configured.get(name) or self._stored.get(name)

    def all(self) -> tuple[BotSettings, ...]:
        """Every bot: configured ones in their configured order, then stored ones by name."""
        return (*self._configured.values(), *self._stored.values())

    def is_configured(self, name: str) -> bool:
        return name in self._configured

    async def lookup(self, name: str) -> BotSettings | None:
        """:meth:`get`; on a miss, or for a stored bot when the snapshot is older than
        ``max_age`` seconds, one :meth:`refresh` (shared with concurrent lookups) first."""
        if name in self._configured:
            return self._configured[name]
        known = self._stored.get(name)
        if known is not None and time.monotonic() - self._loaded_at <= self._max_age:
            return known
        try:
            await self._refresh(since=self._started)
        except Exception:
            if known is None:
                raise
            return known  # the database will say whether it still exists
        return self.get(name)

    async def refresh(self) -> None:
        """Reload the stored bots from the database."""
        await self._refresh(since=None)

    async def _refresh(self, *, since: int | None) -> None:
        """``since``: the refreshes started when the caller missed; one started after that
        (and so finished, since this task holds the lock now) read everything the caller
        could have wanted."""
        async with self._lock:
            if since is not None and self._started != since:
                return
            self._started += 1
            try:
                loaded_at = time.monotonic()
                rows = await self._store.list_stored_bots()
            except BaseException:
                self._started -= 1  # waiting lookups try again themselves
                raise
            self._loaded_at = loaded_at
            self._stored = {bot.name: bot for row in rows if (bot := self._opened(row)) is not None}

    def _opened(self, row: StoredBot) -> BotSettings | None:
        if row.name in self._configured:
            self._warn_once(row.name, "a stored bot has a configured bot's name; ignored")
            return None
        token = None if self._sealer is None else self._sealer.open_or_none(row.token_sealed)
        if token is None:
            self._warn_once(
                row.name,
                "a stored bot's token cannot be opened with server.secret_key; bot skipped",
            )
            return None
        telegram = self._settings.telegram
        return BotSettings(
            name=row.name,
            token=token,
            rate_limit=telegram.rate_limit if row.rate_limit is None else row.rate_limit,
            paid_rate_limit=(
                telegram.paid_rate_limit if row.paid_rate_limit is None else row.paid_rate_limit
            ),
            api_url=telegram.api_url if row.api_url is None else row.api_url,
        )

    def _warn_once(self, name: str, message: str) -> None:
        if name not in self._warned:
            self._warned.add(name)
            logger.warning(message, extra={"bot": name})
