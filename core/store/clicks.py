"""Clicks on tracked links (``tgbroadcast.core.rules.clicks``): a row per recipient and link
opened, written the first time only, and the counts reports show (unique clicks: rows)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tgbroadcast.core.domain.model import ClickCounts
from tgbroadcast.core.store.limits import IDS_PER_IN_LIST, chunks
from tgbroadcast.core.store.tables import clicks

T = TypeVar("T")


async def record(
    connection: AsyncConnection,
    broadcast_id: int,
    user_id: int,
    link: int,
    *,
    variant: str | None,
    now: datetime,
) -> None:
    """Insert the recipient's click on the link (``IntegrityError`` if it had clicked it)."""
    await connection.execute(
        clicks.insert().values(
            broadcast_id=broadcast_id, user_id=user_id, link=link, variant=variant, clicked_at=now
        )
    )


async def counts(connection: AsyncConnection, broadcast_id: int) -> ClickCounts:
    """The broadcast's unique clicks, in all, by link position and by variant name."""
    per_link: dict[tuple[str | None, int], int] = {}
    per_variant: dict[str, int] = {}
    for variant, link, count in await connection.execute(
        select(clicks.c.variant, clicks.c.link, func.count())
        .where(clicks.c.broadcast_id == broadcast_id)
        .group_by(clicks.c.variant, clicks.c.link)
    ):
        per_link[variant, int(link)] = int(count)
        if variant is not None:
            per_variant[variant] = per_variant.get(variant, 0) + int(count)
    clickers = (
        await connection.execute(
            select(func.count(func.distinct(clicks.c.user_id))).where(
                clicks.c.broadcast_id == broadcast_id
            )
        )
    ).scalar_one()
    return ClickCounts(
        clicks=sum(per_link.values()),
        clickers=int(clickers),
        by_link=per_link,
        by_variant=per_variant,
    )


async def per_recipient(
    connection: AsyncConnection, broadcast_id: int, user_ids: Sequence[int]
) -> dict[int, int]:
    """Links each of ``user_ids`` opened (absent: none)."""
    found: dict[int, int] = {}
    for chunk in chunks(sorted(set(user_ids)), IDS_PER_IN_LIST):
        statement = (
            select(clicks.c.user_id, func.count())
            .where(clicks.c.broadcast_id == broadcast_id, clicks.c.user_id.in_(chunk))
            .group_by(clicks.c.user_id)
        )
        for user_id, count in await connection.execute(statement):
            found[int(user_id)] = int(count)
    return found


class ClickRows:
    """:class:`~.store.Store`'s methods for clicks (a mixin: the store brings its engine and
    retried write transactions)."""

    if TYPE_CHECKING:
        _engine: AsyncEngine

        async def _write(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T: ...

    async def record_click(
        self, broadcast_id: int, user_id: int, link: int, *, variant: str | None, now: datetime
    ) -> bool:
        """Record a recipient's click on a link; whether it was its first (a repeat, or a
        concurrent first click elsewhere, writes nothing)."""
        async with self._engine.connect() as connection:  # a repeat writes nothing
            seen = await connection.execute(
                select(clicks.c.link).where(
                    clicks.c.broadcast_id == broadcast_id,
                    clicks.c.user_id == user_id,
                    clicks.c.link == link,
                )
            )
            if seen.first() is not None:
                return False
        try:
            await self._write(
                lambda connection: record(
                    connection, broadcast_id, user_id, link, variant=variant, now=now
                )
            )
        except IntegrityError:
            return False
        return True

    async def click_counts(self, broadcast_id: int) -> ClickCounts:
        """The broadcast's unique clicks, in all, by link and by variant."""
        async with self._engine.connect() as connection:
            return await counts(connection, broadcast_id)

    async def clicks_of(self, broadcast_id: int, user_ids: Sequence[int]) -> dict[int, int]:
        """Links each of ``user_ids`` opened (absent: none)."""
        async with self._engine.connect() as connection:
            return await per_recipient(connection, broadcast_id, user_ids)
