"""Statements of a recall (RecallBroadcast): which recipients' messages are still to delete,
holding them for one recall job at a time (:mod:`.followups`), recording each one's outcome
once, and the move to ``recalled``.

:func:`record` writes an outcome only where none is written yet (the first wins) and counts
it in ``broadcasts.recalled`` in the same transaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Final

from sqlalchemy import (
    ColumnElement,
    String,
    Text,
    and_,
    bindparam,
    exists,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tgbroadcast.core.domain.model import (
    Broadcast,
    BroadcastStatus,
    DeliveryState,
    RecallOutcome,
)
from tgbroadcast.core.store import broadcasts as broadcast_statements
from tgbroadcast.core.store import followups
from tgbroadcast.core.store.followups import SentClaim
from tgbroadcast.core.store.tables import broadcasts, deliveries

if TYPE_CHECKING:
    from collections.abc import Awaitable
    from typing import TypeVar

    T = TypeVar("T")

_SENT: Final = DeliveryState.SENT.value
_RECALLING: Final = BroadcastStatus.RECALLING.value


@dataclass(frozen=True, slots=True, kw_only=True)
class RecallResult:
    """One recipient's recall outcome, as a recall job found it."""

    broadcast_id: int
    user_id: int
    outcome: RecallOutcome
    at: datetime
    error: str | None = None


def _to_recall(now: datetime) -> ColumnElement[bool]:
    """Recipients a recall still has to deal with: sent without an outcome, or a send in
    flight."""
    return or_(
        and_(deliveries.c.state == _SENT, deliveries.c.recall.is_(None)), followups.in_flight(now)
    )


async def claim(
    connection: AsyncConnection,
    broadcast_id: int,
    user_ids: Sequence[int],
    *,
    token: str,
    now: datetime,
    until: datetime,
) -> SentClaim:
    """Hold for ``token`` the sent recipients among ``user_ids`` without a recall outcome
    (see :func:`.followups.claim`)."""
    return await followups.claim(
        connection,
        broadcast_id,
        user_ids,
        to_do=deliveries.c.recall.is_(None),
        token=token,
        now=now,
        until=until,
    )


_WRITING: Final = followups.writing(
    deliveries.c.recall.is_(None),
    values={
        "recall": bindparam("new_recall", type_=String),
        "recall_error": bindparam("new_recall_error", type_=Text),
    },
)
"""Recipients' recall outcomes, unless they have one."""
_COUNT: Final = followups.counter(broadcasts.c.recalled)


async def record(connection: AsyncConnection, results: Sequence[RecallResult]) -> dict[int, int]:
    """Write each of one broadcast's ``results`` whose recipient has no recall outcome yet
    (dropping its claim) and count them in its ``recalled``; the user ids written, each with
    its number among the broadcast's recall outcomes (:class:`.followups.Counter`)."""
    broadcast_ids = {result.broadcast_id for result in results}
    if len(broadcast_ids) != 1:
        raise ValueError("record one broadcast's recall outcomes at a time")
    keys = {"key_broadcast_id": broadcast_ids.pop()}
    rows = [
        {
            **keys,
            "key_user_id": result.user_id,
            "new_recall": result.outcome.value,
            "new_recall_error": result.error,
        }
        for result in sorted(results, key=lambda r: r.user_id)
    ]
    written = await _WRITING.write_all(connection, rows, keys)
    return await _COUNT.count(connection, written, keys) if written else {}


async def finish(
    connection: AsyncConnection, broadcast_id: int, *, now: datetime
) -> Broadcast | None:
    """Move a ``recalling`` broadcast to ``recalled`` if nobody is left to recall (no sent
    recipient without an outcome, no send in flight); the broadcast if this call moved it."""
    left = exists().where(deliveries.c.broadcast_id == broadcast_id, _to_recall(now))
    moved = await connection.execute(
        update(broadcasts)
        .where(broadcasts.c.id == broadcast_id, broadcasts.c.status == _RECALLING, ~left)
        # Final now: one recalled before it finished sending gets its finished_at here.
        .values(
            status=BroadcastStatus.RECALLED.value,
            finished_at=func.coalesce(broadcasts.c.finished_at, now),
        )
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

    def recall_batches(
        self, broadcast_id: int, *, batch_size: int, now: datetime, read_size: int = 10_000
    ) -> AsyncIterator[tuple[int, ...]]:
        """The broadcast's recipients cut into batches exactly as
        :meth:`~.store.Store.job_batches` cuts them (so a re-dispatch publishes the same recall
        jobs), leaving out batches with nobody to recall (see :func:`finish`)."""
        return followups.flagged_batches(
            self._engine,
            broadcast_id,
            _to_recall(now),
            batch_size=batch_size,
            read_size=read_size,
        )

    async def claim_recall(
        self,
        broadcast_id: int,
        user_ids: Sequence[int],
        *,
        token: str,
        now: datetime,
        until: datetime,
    ) -> SentClaim:
        """Hold for ``token`` the sent recipients among ``user_ids`` still to recall; see
        :func:`claim`."""
        return await self._write(
            lambda connection: claim(
                connection, broadcast_id, user_ids, token=token, now=now, until=until
            )
        )

    async def record_recalls(self, results: Sequence[RecallResult]) -> dict[int, int]:
        """Record one broadcast's recall outcomes, each recipient's first only; the user ids
        recorded, each with its number among the broadcast's recall outcomes."""
        if not results:
            return {}
        return await self._write(lambda connection: record(connection, results))

    async def finish_recall(self, broadcast_id: int, *, now: datetime) -> Broadcast | None:
        """``recalled`` once nobody is left to recall; the broadcast if this call moved it."""
        return await self._write(lambda connection: finish(connection, broadcast_id, now=now))

    async def recall_counts(self, broadcast_id: int) -> dict[RecallOutcome, int]:
        """Recipients per recall outcome."""
        async with self._engine.connect() as connection:
            return await counts(connection, broadcast_id)
