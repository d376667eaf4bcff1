"""A broadcast's counters as its recipients' outcomes are recorded: ``sent`` and ``failed``
(and the failures by outcome, ``count_<outcome>``), its move from ``queued`` to ``running``
and to ``completed`` when every recipient is final, its Stars spent, and an edit opened again
by a send of older content.

:func:`count` runs inside :func:`.deliveries.record`'s transaction, on the outcomes it made
final (each counted by exactly one transaction). What it says of the broadcast after them —
its settled recipients, ``sent + failed`` — numbers those outcomes among the broadcast's
(:attr:`.deliveries.Recorded.ordinals`): transactions counting one broadcast are ordered by
its row's lock, so each takes the next numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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
    select,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from tgbroadcast.core.domain import states
from tgbroadcast.core.domain.model import BroadcastStatus, DeliveryState
from tgbroadcast.core.store.tables import COUNTED_OUTCOMES, UtcDateTime, broadcasts, count_column

_COMPLETABLE: Final = sorted(s.value for s in states.sources(BroadcastStatus.COMPLETED))
_COMPLETED: Final = BroadcastStatus.COMPLETED.value


@dataclass(frozen=True, slots=True)
class Counted:
    """What :func:`count` did to a broadcast."""

    completed: bool
    """Whether this count completed it."""
    settled: int
    """Its ``sent + failed`` after this count (0: no such broadcast)."""


async def count(
    connection: AsyncConnection,
    broadcast_id: int,
    sent: int,
    failed: int,
    oldest: int,
    stars: int,
    *,
    now: datetime,
    failures: Mapping[DeliveryState, int] | None = None,
) -> Counted:
    """Add to the broadcast's counters; whether this completed it, and its settled recipients
    after it. ``failures``: the
    ``failed`` recipients by outcome, for those a broadcast counts one by one
    (:data:`~.tables.COUNTED_OUTCOMES`). A send of content older than the broadcast's (in
    flight when it was edited, recorded after its edit jobs looked) opens the edit again, for
    a dispatcher to publish its edit jobs anew.

    PostgreSQL and SQLite count and complete in one ``UPDATE .. RETURNING`` (their ``SET``
    reads the row as it was). MySQL/MariaDB evaluate ``SET`` from left to right with the new
    values and have no ``UPDATE .. RETURNING``: they count in one statement, read the row
    (locked by this transaction) back in a second, and complete it in a third when that read
    says so."""
    parameters = {
        "broadcast_id": broadcast_id,
        "sent": sent,
        "failed": failed,
        "oldest": oldest,
        "stars": stars,
        "now": now,
        **{_added(outcome): (failures or {}).get(outcome, 0) for outcome in COUNTED_OUTCOMES},
    }
    if connection.dialect.update_returning:
        counted = (await connection.execute(_COUNT_AND_COMPLETE, parameters)).first()
        if stars:  # its Stars budget spent: the rest goes at the free rate
            await connection.execute(_STOP_PAID, {"broadcast_id": broadcast_id, "now": now})
        if counted is None:  # no such broadcast: nothing counted, as the two statements did
            return Counted(completed=False, settled=0)
        # Completed by this statement: a broadcast completed before kept its own time.
        completed = counted.status == _COMPLETED and counted.finished_at == now
        return Counted(completed=bool(completed), settled=int(counted.settled))
    await connection.execute(_ADD_COUNTS, parameters)
    if stars:
        await connection.execute(_STOP_PAID, {"broadcast_id": broadcast_id, "now": now})
    after = (await connection.execute(_AFTER, {"broadcast_id": broadcast_id})).first()
    if after is None:
        return Counted(completed=False, settled=0)
    completed = False
    if after.completing:  # the row is this transaction's until it commits
        moved = await connection.execute(_COMPLETE, {"broadcast_id": broadcast_id, "now": now})
        completed = moved.rowcount == 1
    return Counted(completed=completed, settled=int(after.settled))


def _constants(*values: str) -> list[ColumnElement[str]]:
    """An ``IN`` list bound once per statement (a list of plain values would be an expanding
    parameter, its SQL rendered again at every execution)."""
    return [literal(value, String) for value in values]


def _added(outcome: DeliveryState) -> str:
    """The parameter adding to an outcome's count (not the column's name: an ``UPDATE``
    keeps those for its ``SET``)."""
    return f"add_{outcome.value}"


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
        # NULL (a broadcast from before these counts) stays NULL: counted from its deliveries.
        **{
            count_column(outcome): broadcasts.c[count_column(outcome)]
            + bindparam(_added(outcome), type_=BigInteger)
            for outcome in COUNTED_OUTCOMES
        },
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
).returning(
    broadcasts.c.status,
    broadcasts.c.finished_at,
    (broadcasts.c.sent + broadcasts.c.failed).label("settled"),
)
""":data:`_ADD_COUNTS` and :data:`_COMPLETE` in one statement, where ``SET`` reads the old row."""

_COMPLETES_NOW = and_(
    # Paused too (sends in flight finished everyone); never a cancelled one.
    broadcasts.c.status.in_(_constants(*_COMPLETABLE)),
    broadcasts.c.sent + broadcasts.c.failed >= broadcasts.c.total,
)
"""Every recipient of the broadcast, as the row is now, is final: it completes."""

_AFTER = (
    select(
        (broadcasts.c.sent + broadcasts.c.failed).label("settled"),
        _COMPLETES_NOW.label("completing"),
    )
    .where(broadcasts.c.id == bindparam("broadcast_id", type_=BigInteger))
    # The row is this transaction's already; a locking read opens no snapshot, which InnoDB's
    # snapshot isolation (MariaDB 11.6.2 on) would hold the next broadcast's UPDATE to.
    .with_for_update()
)
"""The broadcast's settled recipients after :data:`_ADD_COUNTS`, and whether
:data:`_COMPLETE` would complete it (MySQL/MariaDB: one statement, the completion's only
when it does)."""

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
    .where(broadcasts.c.id == bindparam("broadcast_id", type_=BigInteger), _COMPLETES_NOW)
    .values(status=BroadcastStatus.COMPLETED.value, finished_at=bindparam("now"))
)
