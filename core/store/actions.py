"""Statements on ``broadcast_actions``: who paused, resumed or cancelled a broadcast, and when.

An action is written by the move it records, in the move's transaction
(:func:`.transitions.move`): a committed move always has its row, a refused or rolled-back one
never does. Per broadcast the moves are serialised by the conditional update of its row, so
the rows' ids are in the order the moves happened.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from tgbroadcast.core.domain.model import Broadcast, BroadcastAction, ControlAction
from tgbroadcast.core.store.limits import IDS_PER_IN_LIST, chunks
from tgbroadcast.core.store.tables import ACTOR_LENGTH, broadcast_actions


def check_actor(actor: str) -> None:
    """``ValueError`` for a name the column cannot hold (the configuration accepts none)."""
    if len(actor) > ACTOR_LENGTH:
        raise ValueError(f"an actor's name has at most {ACTOR_LENGTH} characters")


async def record(
    connection: AsyncConnection,
    broadcast_id: int,
    action: ControlAction,
    *,
    actor: str,
    at: datetime,
) -> None:
    """Add one action to the broadcast's history."""
    check_actor(actor)
    await connection.execute(
        broadcast_actions.insert().values(
            broadcast_id=broadcast_id, action=action.value, actor=actor, at=at
        )
    )


async def history(
    connection: AsyncConnection, broadcast_ids: Sequence[int]
) -> dict[int, tuple[BroadcastAction, ...]]:
    """The actions of each of ``broadcast_ids`` that has any, oldest first."""
    found: dict[int, list[BroadcastAction]] = {}
    for chunk in chunks(sorted(set(broadcast_ids)), IDS_PER_IN_LIST):
        statement = (
            select(broadcast_actions)
            .where(broadcast_actions.c.broadcast_id.in_(chunk))
            .order_by(broadcast_actions.c.broadcast_id, broadcast_actions.c.id)
        )
        for row in await connection.execute(statement):
            found.setdefault(row.broadcast_id, []).append(
                BroadcastAction(action=ControlAction(row.action), actor=row.actor, at=row.at)
            )
    return {broadcast_id: tuple(actions) for broadcast_id, actions in found.items()}


async def with_history(
    connection: AsyncConnection, broadcasts: Sequence[Broadcast]
) -> list[Broadcast]:
    """``broadcasts`` with their ``actions`` filled, in one query per chunk of ids."""
    if not broadcasts:
        return []
    known = await history(connection, [broadcast.id for broadcast in broadcasts])
    return [
        dataclasses.replace(broadcast, actions=known.get(broadcast.id, ()))
        for broadcast in broadcasts
    ]
