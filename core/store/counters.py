"""A broadcast's counters as its recipients' outcomes are recorded: ``sent`` and ``failed``,
its move from ``queued`` to ``running`` and to ``completed`` when every recipient is final,
its Stars spent, and an edit opened again by a send of older content.

:func:`count` runs inside :func:`.deliveries.record`'s transaction, on the outcomes it made
final (each counted by exactly one transaction).
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    String,
    and_,
    bindparam,
    case,
    false,
    func,
    literal,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from tgbroadcast.core.domain import states
from tgbroadcast.core.domain.model import BroadcastStatus
from tgbroadcast.core.store.tables import UtcDateTime, broadcasts

_COMPLETABLE: Final = sorted(s.value for s in states.sources(BroadcastStatus.COMPLETED))
_COMPLETED: Final = BroadcastStatus.COMPLETED.value


async def count(
    connection: AsyncConnection,
    broadcast_id: int,
    sent: int,
    failed: int,
    oldest: int,
    stars: int,
    *,
    now: datetime,
) -> bool:
    """Add to the broadcast's counters; whether this completed it. A send of content older
    than the broadcast's (in flight when it was edited, recorded after its edit jobs looked)
    opens the edit again, for a dispatcher to publish its edit jobs anew.

    PostgreSQL and SQLite count and complete in one ``UPDATE .. RETURNING`` (their ``SET``
    reads the row as it was); MySQL/MariaDB in two statements, as they evaluate ``SET`` from
    left to right with the new values and have no ``UPDATE .. RETURNING``."""
    parameters = {
        "broadcast_id": broadcast_id,
        "sent": sent,
        "failed": failed,
        "oldest": oldest,
        "stars": stars,
        "now": now,
    }
    if connection.dialect.update_returning:
        counted = (await connection.execute(_COUNT_AND_COMPLETE, parameters)).first()
        if stars:  # its Stars budget spent: the rest goes at the free rate
            await connection.execute(_STOP_PAID, {"broadcast_id": broadcast_id, "now": now})
        if counted is None:  # no such broadcast: nothing counted, as the two statements did
            return False
        # Completed by this statement: a broadcast completed before kept its own time.
        return bool(counted.status == _COMPLETED and counted.finished_at == now)
    await connection.execute(_ADD_COUNTS, parameters)
    if stars:
        await connection.execute(_STOP_PAID, {"broadcast_id": broadcast_id, "now": now})
    completed = await connection.execute(_COMPLETE, {"broadcast_id": broadcast_id, "now": now})
    return bool(completed.rowcount == 1)


def _constants(*values: str) -> list[ColumnElement[str]]:
    """An ``IN`` list bound once per statement (a list of plain values would be an expanding
    parameter, its SQL rendered again at every execution)."""
    return [literal(value, String) for value in values]


NO_SEND: Final = 2**31 - 1
"""The ``oldest`` of a group that sent nothing: no content version is that new."""
_SENT_OLDER = and_(
    broadcasts.c.content_version > bindparam("oldest", type_=Integer),
    broadcasts.c.status.not_in(
        _constants(BroadcastStatus.RECALLING.value, BroadcastStatus.RECALLED.value)
    ),
)
"""A send recorded with older content than the broadcast's, not recalled since."""

_ADD_COUNTS = (
    update(broadcasts)
    .where(broadcasts.c.id == bindparam("broadcast_id", type_=BigInteger))
    .values(
        sent=broadcasts.c.sent + bindparam("sent", type_=BigInteger),
        failed=broadcasts.c.failed + bindparam("failed", type_=BigInteger),
        status=case(
            (broadcasts.c.status == BroadcastStatus.QUEUED.value, BroadcastStatus.RUNNING.value),
            else_=broadcasts.c.status,
        ),
        started_at=func.coalesce(broadcasts.c.started_at, bindparam("now", type_=UtcDateTime())),
        editing=case((_SENT_OLDER, true()), else_=broadcasts.c.editing),
        stars_spent_milli=broadcasts.c.stars_spent_milli + bindparam("stars", type_=BigInteger),
        dispatched=case((_SENT_OLDER, false()), else_=broadcasts.c.dispatched),
    )
)

_COMPLETING = and_(
    # Paused too (sends in flight finished everyone); never a cancelled one.
    broadcasts.c.status.in_(_constants(*_COMPLETABLE)),
    broadcasts.c.sent
    + bindparam("sent", type_=BigInteger)
    + broadcasts.c.failed
    + bindparam("failed", type_=BigInteger)
    >= broadcasts.c.total,
)
"""The counting completes the broadcast (on the row as it was before)."""

_COUNT_AND_COMPLETE = _ADD_COUNTS.values(
    status=case(
        (_COMPLETING, _COMPLETED),
        (broadcasts.c.status == BroadcastStatus.QUEUED.value, BroadcastStatus.RUNNING.value),
        else_=broadcasts.c.status,
    ),
    finished_at=case(
        (_COMPLETING, bindparam("now", type_=UtcDateTime())), else_=broadcasts.c.finished_at
    ),
).returning(broadcasts.c.status, broadcasts.c.finished_at)
""":data:`_ADD_COUNTS` and :data:`_COMPLETE` in one statement, where ``SET`` reads the old row."""

_STOP_PAID = (
    update(broadcasts)
    .where(
        broadcasts.c.id == bindparam("broadcast_id", type_=BigInteger),
        broadcasts.c.max_stars.is_not(None),
        broadcasts.c.paid_stopped_at.is_(None),
        broadcasts.c.stars_spent_milli >= broadcasts.c.max_stars * 1000,
    )
    .values(paid_stopped_at=bindparam("now"))
)

_COMPLETE = (
    update(broadcasts)
    .where(
        broadcasts.c.id == bindparam("broadcast_id", type_=BigInteger),
        # Paused too (sends in flight finished everyone); never a cancelled one.
        broadcasts.c.status.in_(_constants(*_COMPLETABLE)),
        broadcasts.c.sent + broadcasts.c.failed >= broadcasts.c.total,
    )
    .values(status=BroadcastStatus.COMPLETED.value, finished_at=bindparam("now"))
)
