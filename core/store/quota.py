"""The counts ``server.max_pending_recipients`` is checked against, cheap enough for every send.

Neither reads ``deliveries``: the recipients not yet final are summed from the counters of the
broadcasts not yet final (``total - sent - failed``; a final broadcast's leftover ``PENDING``
recipients are never sent to, so they do not count), and an audience is counted on one bot's
``users``.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from tgbroadcast.core.domain import states
from tgbroadcast.core.domain.model import BroadcastStatus, UserFilter
from tgbroadcast.core.store import audiences
from tgbroadcast.core.store.tables import broadcasts, users

UNFINISHED: Final = tuple(sorted(s.value for s in BroadcastStatus if s in states.SEND_PENDING))
"""Statuses whose pending recipients may still be sent: scheduled, queued, running, paused."""


async def pending_recipients(connection: AsyncConnection) -> int:
    """Recipients not yet final over every broadcast not yet final, of every bot (an index
    range scan of ``ix_broadcasts_status``: one row per unfinished broadcast)."""
    waiting = broadcasts.c.total - broadcasts.c.sent - broadcasts.c.failed
    statement = select(func.coalesce(func.sum(waiting), 0)).where(
        broadcasts.c.status.in_(UNFINISHED)
    )
    return int((await connection.execute(statement)).scalar_one())


async def audience_size(
    connection: AsyncConnection, user_filter: UserFilter | None, *, bot: str
) -> int:
    """The bot's active users ``user_filter`` selects (every one for None) right now."""
    statement = (
        select(func.count())
        .select_from(users)
        .where(*audiences.conditions(user_filter, bot=bot, active_only=True))
    )
    return int((await connection.execute(statement)).scalar_one())
