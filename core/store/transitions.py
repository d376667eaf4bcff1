"""Statements for a broadcast's lifecycle: the API's and the scheduler's moves, listing,
idempotency keys and the dispatch of a generation of jobs.

The API's moves (pause, resume, cancel, recall) are recorded in ``broadcast_actions`` with who
asked, in the move's own transaction (:mod:`.actions`).

Every move is one conditional ``UPDATE ... WHERE id = ? AND status IN (sources)``: of
movers racing on one broadcast exactly one matches; the others read the state it left and
get :class:`~tgbroadcast.core.domain.errors.FailedPrecondition` naming it (the table is
:mod:`tgbroadcast.core.domain.states`).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import case, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tgbroadcast.core.domain.model import SYSTEM_ACTOR, Broadcast, BroadcastStatus, ControlAction
from tgbroadcast.core.domain.states import Command, command_not_allowed
from tgbroadcast.core.store import actions
from tgbroadcast.core.store import broadcasts as broadcast_statements
from tgbroadcast.core.store.tables import broadcasts


async def move(
    connection: AsyncConnection,
    broadcast_id: int,
    command: Command,
    *,
    now: datetime,
    actor: str = SYSTEM_ACTOR,
) -> Broadcast:
    """Apply ``command``; the broadcast as it left it, with its actions. ``NotFound``, or
    ``FailedPrecondition`` when the broadcast's state does not allow the command (nothing is
    written). A pause, resume or cancel is recorded with ``actor`` and ``now`` in the same
    transaction; the scheduler's start is not an action."""
    values: dict[str, Any]
    if command is Command.CANCEL:
        values = {"status": BroadcastStatus.CANCELLED.value, "finished_at": now}
    elif command is Command.PAUSE:
        values = {"status": BroadcastStatus.PAUSED.value}
    elif command is Command.RESUME:
        values = {
            "status": case(
                (broadcasts.c.started_at.is_(None), BroadcastStatus.QUEUED.value),
                else_=BroadcastStatus.RUNNING.value,
            ),
            "resumed_at": now,
            "dispatched": False,
        }
    elif command is Command.RECALL:  # its jobs are cut afresh: the recall's own
        values = {
            "status": BroadcastStatus.RECALLING.value,
            "recall_at": now,
            "dispatched": False,
            "editing": False,  # an edit in progress ends: nothing is edited after a recall
        }
    else:
        values = {"status": BroadcastStatus.QUEUED.value}
    sources = sorted(state.value for state in command.sources)
    moved = await connection.execute(
        update(broadcasts)
        .where(broadcasts.c.id == broadcast_id, broadcasts.c.status.in_(sources))
        .values(**values)
    )
    broadcast = await broadcast_statements.fetch(connection, broadcast_id)  # NotFound
    if moved.rowcount != 1:
        raise command_not_allowed(broadcast_id, broadcast.status, command)
    if command is Command.START:  # the scheduler's move; a scheduled broadcast has no actions
        return broadcast
    await actions.record(
        connection, broadcast_id, ControlAction(command.value), actor=actor, at=now
    )
    (with_actions,) = await actions.with_history(connection, [broadcast])
    return with_actions


async def page(
    connection: AsyncConnection,
    *,
    statuses: Collection[BroadcastStatus],
    before: int | None,
    limit: int,
    bots: Collection[str] | None = None,
) -> list[Broadcast]:
    """Up to ``limit`` broadcasts in any of ``statuses`` (any when empty) with ``id <
    before``, newest (highest id) first, with their actions; of every bot when ``bots`` is
    ``None``, else only of those bots (none for an empty collection)."""
    if bots is not None and not bots:
        return []
    statement = select(broadcasts).order_by(broadcasts.c.id.desc()).limit(limit)
    if bots is not None:
        statement = statement.where(broadcasts.c.bot.in_(sorted(set(bots))))
    if statuses:
        statement = statement.where(broadcasts.c.status.in_(sorted(s.value for s in statuses)))
    if before is not None:
        statement = statement.where(broadcasts.c.id < before)
    found = [broadcast_statements.from_row(row) for row in await connection.execute(statement)]
    return await actions.with_history(connection, found)


async def due(connection: AsyncConnection, *, now: datetime, limit: int) -> list[int]:
    """Ids of scheduled broadcasts whose ``send_at`` has come, earliest first."""
    statement = (
        select(broadcasts.c.id)
        .where(
            broadcasts.c.status == BroadcastStatus.SCHEDULED.value,
            broadcasts.c.send_at <= now,
        )
        .order_by(broadcasts.c.send_at, broadcasts.c.id)
        .limit(limit)
    )
    return list((await connection.scalars(statement)).all())


async def by_idempotency_key(
    connection: AsyncConnection, key: str, *, bot: str
) -> tuple[Broadcast, str | None] | None:
    """The bot's broadcast created with ``key`` and the hash of the request it came with
    (keys are per bot: another bot's broadcast with the same key is not it)."""
    statement = select(broadcasts).where(
        broadcasts.c.bot == bot, broadcasts.c.idempotency_key == key
    )
    row = (await connection.execute(statement)).first()
    if row is None:
        return None
    return broadcast_statements.from_row(row), row.request_hash


async def mark_generation_dispatched(
    connection: AsyncConnection,
    broadcast_id: int,
    resumed_at: datetime | None,
    *,
    sends: bool = False,
) -> bool:
    """Set ``dispatched`` if the broadcast is still at the generation ``resumed_at`` names;
    whether it was (a resume in between needs its own dispatch). ``sends``: its send jobs were
    published — not a mark for a broadcast recalled since (its recall needs its own)."""
    generation = (
        broadcasts.c.resumed_at.is_(None)
        if resumed_at is None
        else broadcasts.c.resumed_at == resumed_at
    )
    conditions = [broadcasts.c.id == broadcast_id, generation]
    if sends:
        conditions.append(broadcasts.c.status != BroadcastStatus.RECALLING.value)
    marked = await connection.execute(update(broadcasts).where(*conditions).values(dispatched=True))
    return bool(marked.rowcount == 1)
