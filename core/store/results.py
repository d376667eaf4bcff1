"""A broadcast's final results as a watch replays them from SQL: pages in user id order,
and the counters up to a recipient (where a replay resumes)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tgbroadcast.core.domain.model import DeliveryResult, DeliveryState
from tgbroadcast.core.store import deliveries as delivery_rows
from tgbroadcast.core.store.tables import SETTLED, deliveries


@dataclass(frozen=True, slots=True)
class ResultCounts:
    """What a broadcast's final results up to a recipient counted (a replay's counters)."""

    sent: int = 0
    failed: int = 0
    recalled: int = 0
    edited: int = 0
    """Edit outcomes of the content version asked about."""


async def counts_through(
    connection: AsyncConnection, broadcast_id: int, user_id: int, *, version: int
) -> ResultCounts:
    """The final results of the recipients up to ``user_id`` (included), counted."""
    c = deliveries.c
    edited = and_(c.edit.is_not(None), func.coalesce(c.content_version, 1) == version)
    row = (
        await connection.execute(
            select(
                *(  # (no FILTER clause: MySQL/MariaDB have none)
                    func.sum(case((condition, 1), else_=0))
                    for condition in (
                        c.state == DeliveryState.SENT.value,
                        c.state != DeliveryState.SENT.value,
                        c.recall.is_not(None),
                        edited,
                    )
                )
            ).where(c.broadcast_id == broadcast_id, SETTLED, c.user_id <= user_id)
        )
    ).one()
    return ResultCounts(*(int(value or 0) for value in row))


class ResultRows:
    """:class:`~.store.Store`'s reads of final results (a mixin: the store brings its
    engine)."""

    if TYPE_CHECKING:
        _engine: AsyncEngine

    async def results_among(
        self, broadcast_id: int, user_ids: Sequence[int]
    ) -> list[DeliveryResult]:
        """The final results of those of ``user_ids`` that have one, ordered by user id."""
        async with self._engine.connect() as connection:
            return await delivery_rows.results_among(connection, broadcast_id, user_ids)

    async def list_results(
        self, broadcast_id: int, *, after_user_id: int | None, limit: int
    ) -> list[DeliveryResult]:
        """Up to ``limit`` final results with ``user_id > after_user_id``, by user id."""
        if limit < 1:
            raise ValueError(f"limit must be positive, not {limit}")
        async with self._engine.connect() as connection:
            return await delivery_rows.results_page(
                connection, broadcast_id, after=after_user_id, limit=limit
            )

    async def results_through(
        self, broadcast_id: int, user_id: int, *, version: int
    ) -> ResultCounts:
        """The final results of the recipients up to ``user_id`` (included), counted."""
        async with self._engine.connect() as connection:
            return await counts_through(connection, broadcast_id, user_id, version=version)
