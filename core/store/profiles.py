"""Reading recipients' profiles for personalization: one query per job batch."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from tgbroadcast.core.domain.model import UserProfile
from tgbroadcast.core.store.limits import IDS_PER_IN_LIST, among, chunks
from tgbroadcast.core.store.tables import users


async def by_id(
    connection: AsyncConnection, user_ids: Sequence[int], *, bot: str
) -> dict[int, UserProfile]:
    """The profiles of those of ``user_ids`` that are the bot's users (unknown ids, and other
    bots' users, are absent)."""
    found: dict[int, UserProfile] = {}
    columns = (
        users.c.id,
        users.c.username,
        users.c.first_name,
        users.c.last_name,
        users.c.language_code,
    )
    for chunk in chunks(sorted(set(user_ids)), IDS_PER_IN_LIST):
        rows = await connection.execute(
            select(*columns).where(users.c.bot == bot, among(users.c.id, chunk))
        )
        for row in rows:
            found[row.id] = UserProfile(
                id=row.id,
                username=row.username,
                first_name=row.first_name,
                last_name=row.last_name,
                language_code=row.language_code,
            )
    return found
