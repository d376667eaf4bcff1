"""Statements of a recall (RecallBroadcast): which recipients' messages are still to delete,
holding them for one recall job at a time, recording each one's outcome once, and the move
to ``recalled``.

A recall job holds the ``SENT`` recipients it deletes with the same claim columns a send job
holds ``PENDING`` ones with (a recipient is in one state or the other, so the two never
meet): two handlings of a job never delete one recipient's messages at once, so its first
answer is the one recorded. :func:`record` writes an outcome only where none is written
yet (the first wins) and counts it in ``broadcasts.recalled`` in the same transaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Final

from sqlalchemy import ColumnElement, and_, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tgbroadcast.core.domain.model import (
    Broadcast,
    BroadcastStatus,
    DeliveryState,
    RecallOutcome,
)
from tgbroadcast.core.store import broadcasts as broadcast_statements
from tgbroadcast.core.store.deliveries import decode_message_ids
from tgbroadcast.core.store.limits import IDS_PER_IN_LIST, chunks
from tgbroadcast.core.store.tables import CLAIM_TOKEN_LENGTH, broadcasts, deliveries

if TYPE_CHECKING:
    from collections.abc import Awaitable
    from typing import TypeVar

    T = TypeVar("T")

_SENT: Final = DeliveryState.SENT.value
_PENDING: Final = DeliveryState.PENDING.value
_RECALLING: Final = BroadcastStatus.RECALLING.value


@dataclass(frozen=True, slots=True, kw_only=True)
class RecallTarget:
    """A sent recipient whose messages a recall job holds: its chat, its messages (in
    order) and when they were sent."""

    user_id: int
    message_ids: tuple[int, ...]
    sent_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class RecallClaim:
    """What one :func:`claim` found among a recall job's recipients."""

    held: tuple[RecallTarget, ...]
    """Sent recipients without a recall outcome that the caller's token holds, by user id."""
    busy: int
    """Recipients someone else holds: a sent one another handling deletes, or a pending one
    whose send is still in flight (it may become sent). The job looks again later."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RecallResult:
    """One recipient's recall outcome, as a recall job found it."""

    broadcast_id: int
    user_id: int
    outcome: RecallOutcome
    at: datetime
    error: str | None = None


def _to_recall(now: datetime) -> ColumnElement[bool]:
    """Recipients a recall still has to deal with: sent without an outcome, or pending with a
    live claim (a send in flight)."""
    return or_(
        and_(deliveries.c.state == _SENT, deliveries.c.recall.is_(None)),
        and_(deliveries.c.state == _PENDING, deliveries.c.claimed_until >= now),
    )


async def claim(
    connection: AsyncConnection,
    broadcast_id: int,
    user_ids: Sequence[int],
    *,
    token: str,
    now: datetime,
    until: datetime,
) -> RecallClaim:
    """Hold for ``token`` until ``until`` those of ``user_ids`` that are ``SENT`` without a
    recall outcome and not held by another token (its own are extended); and count the
    others someone holds. Exclusive as :func:`.deliveries.claim` is."""
    if not 0 < len(token) <= CLAIM_TOKEN_LENGTH:
        raise ValueError(f"a claim token has 1 to {CLAIM_TOKEN_LENGTH} characters")
    held: list[RecallTarget] = []
    busy = 0
    for chunk in chunks(sorted(set(user_ids)), IDS_PER_IN_LIST):
        await connection.execute(
            update(deliveries)
            .where(
                deliveries.c.broadcast_id == broadcast_id,
                deliveries.c.user_id.in_(chunk),
                deliveries.c.state == _SENT,
                deliveries.c.recall.is_(None),
                or_(
                    deliveries.c.claimed_until.is_(None),
                    deliveries.c.claimed_until < now,
                    deliveries.c.claimed_by == token,
                ),
            )
            .values(claimed_by=token, claimed_until=until)
        )
        rows = await connection.execute(
            select(
                deliveries.c.user_id,
                deliveries.c.state,
                deliveries.c.message_id,
                deliveries.c.message_ids,
                deliveries.c.finished_at,
                deliveries.c.claimed_by,
            )
            .where(
                deliveries.c.broadcast_id == broadcast_id,
                deliveries.c.user_id.in_(chunk),
                _to_recall(now),
            )
            .order_by(deliveries.c.user_id)
        )
        for row in rows:
            if row.state != _SENT or row.claimed_by != token:
                busy += 1
                continue
            message_ids = decode_message_ids(row.message_ids) or (
                () if row.message_id is None else (row.message_id,)
            )
            held.append(
                RecallTarget(user_id=row.user_id, message_ids=message_ids, sent_at=row.finished_at)
            )
    return RecallClaim(held=tuple(held), busy=busy)


async def record(connection: AsyncConnection, results: Sequence[RecallResult]) -> list[int]:
    """Write each result whose recipient has no recall outcome yet (dropping its claim) and
    count them in their broadcast's ``recalled``; the user ids written, per call in order."""
    written: list[int] = []
    counts: dict[int, int] = {}
    for result in sorted(results, key=lambda r: (r.broadcast_id, r.user_id)):
        done = await connection.execute(
            update(deliveries)
            .where(
                deliveries.c.broadcast_id == result.broadcast_id,
                deliveries.c.user_id == result.user_id,
                deliveries.c.state == _SENT,
                deliveries.c.recall.is_(None),
            )
            .values(
                recall=result.outcome.value,
                recall_error=result.error,
                claimed_by=None,
                claimed_until=None,
            )
        )
        if done.rowcount == 1:
            written.append(result.user_id)
            counts[result.broadcast_id] = counts.get(result.broadcast_id, 0) + 1
    for broadcast_id, count in sorted(counts.items()):
        await connection.execute(
            update(broadcasts)
            .where(broadcasts.c.id == broadcast_id)
            .values(recalled=broadcasts.c.recalled + count)
        )
    return written


async def finish(
    connection: AsyncConnection, broadcast_id: int, *, now: datetime
) -> Broadcast | None:
    """Move a ``recalling`` broadcast to ``recalled`` if nobody is left to recall (no sent
    recipient without an outcome, no send in flight); the broadcast if this call moved it."""
    left = exists().where(deliveries.c.broadcast_id == broadcast_id, _to_recall(now))
    moved = await connection.execute(
        update(broadcasts)
        .where(broadcasts.c.id == broadcast_id, broadcasts.c.status == _RECALLING, ~left)
        .values(status=BroadcastStatus.RECALLED.value)
    )
    if moved.rowcount != 1:
        return None
    return await broadcast_statements.fetch(connection, broadcast_id)


async def counts(connection: AsyncConnection, broadcast_id: int) -> dict[RecallOutcome, int]:
    """Recipients per recall outcome (outcomes nobody has are absent)."""
    statement = (
        select(deliveries.c.recall, func.count())
        .where(deliveries.c.broadcast_id == broadcast_id, deliveries.c.recall.is_not(None))
        .group_by(deliveries.c.recall)
    )
    return {RecallOutcome(name): n for name, n in await connection.execute(statement)}


class RecallRows:
    """:class:`~.store.Store`'s methods for recalls (a mixin: the store brings its engine and
    retried write transactions)."""

    if TYPE_CHECKING:
        _engine: AsyncEngine

        async def _write(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T: ...

    async def recall_batches(
        self, broadcast_id: int, *, batch_size: int, now: datetime, read_size: int = 10_000
    ) -> AsyncIterator[tuple[int, ...]]:
        """The broadcast's recipients cut into batches exactly as
        :meth:`~.store.Store.job_batches` cuts them (so a re-dispatch publishes the same recall
        jobs), leaving out batches with nobody to recall (see :func:`finish`)."""
        if batch_size < 1 or read_size < 1:
            raise ValueError("batch and read sizes must be positive")
        after: int | None = None
        rows: list[tuple[int, bool]] = []
        last_page = False
        wanted = _to_recall(now)
        while not last_page:
            statement = (
                select(deliveries.c.user_id, wanted)
                .where(deliveries.c.broadcast_id == broadcast_id)
                .order_by(deliveries.c.user_id)
                .limit(read_size)
            )
            if after is not None:
                statement = statement.where(deliveries.c.user_id > after)
            async with self._engine.connect() as connection:
                page = (await connection.execute(statement)).all()
            last_page = len(page) < read_size
            if page:
                after = page[-1][0]
            rows.extend((user_id, bool(flag)) for user_id, flag in page)
            cut = len(rows) if last_page else len(rows) - len(rows) % batch_size
            for start in range(0, cut, batch_size):
                batch = rows[start : start + batch_size]
                if any(flag for _, flag in batch):
                    yield tuple(user_id for user_id, _ in batch)
            del rows[:cut]

    async def claim_recall(
        self,
        broadcast_id: int,
        user_ids: Sequence[int],
        *,
        token: str,
        now: datetime,
        until: datetime,
    ) -> RecallClaim:
        """Hold for ``token`` the sent recipients among ``user_ids`` still to recall; see
        :func:`claim`."""
        return await self._write(
            lambda connection: claim(
                connection, broadcast_id, user_ids, token=token, now=now, until=until
            )
        )

    async def record_recalls(self, results: Sequence[RecallResult]) -> list[int]:
        """Record recall outcomes, each recipient's first only; the user ids recorded."""
        if not results:
            return []
        return await self._write(lambda connection: record(connection, results))

    async def finish_recall(self, broadcast_id: int, *, now: datetime) -> Broadcast | None:
        """``recalled`` once nobody is left to recall; the broadcast if this call moved it."""
        return await self._write(lambda connection: finish(connection, broadcast_id, now=now))

    async def recall_counts(self, broadcast_id: int) -> dict[RecallOutcome, int]:
        """Recipients per recall outcome."""
        async with self._engine.connect() as connection:
            return await counts(connection, broadcast_id)
