"""The store's methods for a bot's users (a mixin of :class:`~.store.Store`, which brings its
engine, its retried write transactions and its planner statistics)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine

from tgbroadcast.core.domain.access import DEFAULT_BOT
from tgbroadcast.core.domain.model import User, UserFilter, UserPage, UserProfile
from tgbroadcast.core.store import profiles
from tgbroadcast.core.store import users as _users  # (``users`` is upsert_users' parameter)
from tgbroadcast.core.store.users import check_bot

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from typing import TypeVar

    from sqlalchemy.ext.asyncio import AsyncConnection

    from tgbroadcast.core.store.statistics import PlannerStatistics

    T = TypeVar("T")


class UserRows:
    """:class:`~.store.Store`'s methods for users: upserts, pages, reads, deletes, profiles."""

    if TYPE_CHECKING:
        _engine: AsyncEngine
        statistics: PlannerStatistics

        async def _write(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T: ...

    async def migrate_chat(self, old_id: int, new_id: int, *, bot: str = DEFAULT_BOT) -> None:
        """A group became a supergroup: the bot's later broadcasts address its user row by
        ``new_id`` (other bots' rows for the group are left as they are)."""
        await self._write(
            lambda connection: _users.migrate(
                connection, old_id, new_id, bot=bot, now=datetime.now(UTC)
            )
        )

    async def upsert_users(self, users: Sequence[UserProfile], *, bot: str = DEFAULT_BOT) -> int:
        """Insert new users of the bot and refresh known ones; returns how many distinct ids
        were given.

        For a known user only the given (non-``None``) profile fields change; given ``tags``
        replace the user's tags. Every given user ends up active (``blocked_reason`` and
        ``blocked_at`` cleared) with ``updated_at`` = now. Repeated ids merge, later fields
        win. One transaction, however many users.
        """
        check_bot(bot)
        profiles = _users.merge_profiles(users)
        if profiles:
            await self._write(
                lambda connection: _users.upsert(
                    connection, profiles, bot=bot, now=datetime.now(UTC)
                )
            )
            self.statistics.users_written(len(profiles))  # committed, as a broadcast's
        return len(profiles)

    async def list_users(
        self,
        *,
        after: int | None,
        limit: int,
        user_filter: UserFilter | None = None,
        active_only: bool = False,
        bot: str = DEFAULT_BOT,
    ) -> UserPage:
        """Up to ``limit`` of the bot's users with ``id > after``, by id, each with its tags;
        only those matching ``user_filter`` (see :mod:`.audiences`) and, with
        ``active_only``, active; ``next_after`` if more follow."""
        if limit < 1:
            raise ValueError(f"limit must be positive, not {limit}")
        async with self._engine.connect() as connection:
            return await _users.page(
                connection,
                bot=bot,
                after=after,
                limit=limit,
                user_filter=user_filter,
                active_only=active_only,
            )

    async def get_user(self, user_id: int, *, bot: str = DEFAULT_BOT) -> User:
        """The bot's user with its tags; :class:`~tgbroadcast.core.domain.errors.NotFound` if
        the bot has none with that id."""
        async with self._engine.connect() as connection:
            return await _users.fetch(connection, user_id, bot=bot)

    async def delete_user(self, user_id: int, *, bot: str = DEFAULT_BOT) -> None:
        """Forget the bot's user and its tags (its past deliveries stay; other bots' users
        with that id too); ``NotFound`` if the bot has none with that id."""
        await self._write(lambda connection: _users.remove(connection, user_id, bot=bot))

    async def profiles(
        self, user_ids: Sequence[int], *, bot: str = DEFAULT_BOT
    ) -> dict[int, UserProfile]:
        """The profiles of those of ``user_ids`` that are the bot's users, in one query per
        500 ids (personalization reads a job batch's recipients at once); unknown ids are
        absent."""
        if not user_ids:
            return {}
        async with self._engine.connect() as connection:
            return await profiles.by_id(connection, user_ids, bot=bot)
