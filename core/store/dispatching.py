"""What the dispatcher reads and writes for many small broadcasts at once: their rows and
recipients in one read, their ``dispatched`` flags in one transaction (a server answering
many small sends publishes them in groups, not a read, a read and a write each)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tgbroadcast.core.domain.model import Broadcast, BroadcastStatus, DeliveryState
from tgbroadcast.core.store import broadcasts as broadcast_rows
from tgbroadcast.core.store import transitions
from tgbroadcast.core.store.limits import IDS_PER_IN_LIST, chunks
from tgbroadcast.core.store.tables import broadcasts, deliveries

if TYPE_CHECKING:
    from collections.abc import Awaitable
    from typing import TypeVar

    T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SmallBroadcast:
    """A broadcast with few enough recipients for one job, and those recipients."""

    broadcast: Broadcast
    recipients: tuple[int, ...]
    """Every recipient, whatever its state, ascending (the broadcast's one job batch)."""
    pending: bool
    """Whether any of them is still ``PENDING`` (a batch with nobody pending is skipped)."""


_BY_IDS = select(broadcasts).where(broadcasts.c.id.in_(bindparam("ids", expanding=True)))
_RECIPIENTS = (
    select(deliveries.c.broadcast_id, deliveries.c.user_id, deliveries.c.state)
    .where(deliveries.c.broadcast_id.in_(bindparam("ids", expanding=True)))
    .order_by(deliveries.c.broadcast_id, deliveries.c.user_id)
)
_PENDING = DeliveryState.PENDING.value
_MARK_FIRST_GENERATIONS = (
    update(broadcasts)
    .where(
        broadcasts.c.id.in_(bindparam("ids", expanding=True)),
        broadcasts.c.resumed_at.is_(None),
        # A recall since (it leaves the generation as it was) wants its own dispatch: marked
        # here, the rescuer would never take it over if its server stopped before that.
        broadcasts.c.status != BroadcastStatus.RECALLING.value,
    )
    .values(dispatched=True)
)
_MARK_FIRST_GENERATION = (
    update(broadcasts)
    .where(
        broadcasts.c.id == bindparam("broadcast_id"),
        broadcasts.c.resumed_at.is_(None),
        broadcasts.c.status != BroadcastStatus.RECALLING.value,
    )
    .values(dispatched=True)
)
"""The same for one broadcast (half the groups of a steady stream of small sends): no ``IN``
list to render at each execution."""


def _padded(ids: Sequence[int]) -> list[int]:
    """``ids`` with its last repeated up to a power of two: an ``IN`` list of any length is
    one of ten statements, not one per length (PostgreSQL's driver keeps a hundred prepared)."""
    size = 1 << (len(ids) - 1).bit_length()
    return [*ids, *[ids[-1]] * (size - len(ids))]


class DispatchRows:
    """:class:`~.store.Store`'s methods for dispatching broadcasts in groups (a mixin: the
    store brings its engine and retried write transactions)."""

    if TYPE_CHECKING:
        _engine: AsyncEngine

        async def _write(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T: ...

    async def small_broadcasts(
        self,
        broadcast_ids: Sequence[int],
        *,
        max_recipients: int,
        eligible: Callable[[Broadcast], bool],
    ) -> list[SmallBroadcast]:
        """Those of the broadcasts that exist, pass ``eligible`` and have at most
        ``max_recipients`` recipients, with their recipients; in ``broadcast_ids``' order.
        Two queries per 500 ids, on one connection."""
        found: dict[int, Broadcast] = {}
        rows: dict[int, list[tuple[int, str]]] = {}
        async with self._engine.connect() as connection:
            for chunk in chunks(sorted(set(broadcast_ids)), IDS_PER_IN_LIST):
                for row in await connection.execute(_BY_IDS, {"ids": _padded(chunk)}):
                    broadcast = broadcast_rows.from_row(row)
                    if broadcast.total <= max_recipients and eligible(broadcast):
                        found[broadcast.id] = broadcast
                        rows[broadcast.id] = []
                if chosen := [i for i in chunk if i in found]:
                    for broadcast_id, user_id, state in await connection.execute(
                        _RECIPIENTS, {"ids": _padded(chosen)}
                    ):
                        rows[broadcast_id].append((user_id, state))
        return [
            SmallBroadcast(
                broadcast=found[broadcast_id],
                recipients=tuple(user_id for user_id, _ in rows[broadcast_id]),
                pending=any(state == _PENDING for _, state in rows[broadcast_id]),
            )
            for broadcast_id in dict.fromkeys(broadcast_ids)
            # (``total`` is the recipients' count; a row count above it is not one job.)
            if broadcast_id in found and len(rows[broadcast_id]) <= max_recipients
        ]

    async def mark_generations_dispatched(
        self, generations: Sequence[tuple[int, datetime | None]]
    ) -> set[int]:
        """As :meth:`~.store.Store.mark_generation_dispatched` for each ``(broadcast_id,
        resumed_at)``, in one transaction; the ids marked (not those resumed since)."""

        async def mark(connection: AsyncConnection) -> set[int]:
            marked: set[int] = set()
            todo = sorted(set(generations), key=lambda g: g[0])
            # Never resumed (new broadcasts): one statement marks them all, when
            # none was resumed meanwhile; else each is marked on its own, below.
            first = [broadcast_id for broadcast_id, resumed_at in todo if resumed_at is None]
            if 0 < len(first) <= IDS_PER_IN_LIST:
                if len(first) == 1:
                    updated = await connection.execute(
                        _MARK_FIRST_GENERATION, {"broadcast_id": first[0]}
                    )
                else:
                    updated = await connection.execute(
                        _MARK_FIRST_GENERATIONS, {"ids": _padded(first)}
                    )
                if updated.rowcount == len(first):
                    marked.update(first)
                # Each on its own below only when some of several were not marked.
                if updated.rowcount == len(first) or len(first) == 1:
                    todo = [g for g in todo if g[1] is not None]
            for broadcast_id, resumed_at in todo:
                if await transitions.mark_generation_dispatched(
                    connection, broadcast_id, resumed_at, sends=True
                ):
                    marked.add(broadcast_id)
            return marked

        if not generations:
            return set()
        return await self._write(mark)
