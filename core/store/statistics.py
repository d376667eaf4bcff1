"""PostgreSQL's planner statistics refreshed after a big broadcast or import is written.

A new broadcast's id is in none of ``deliveries``' statistics until the table is analyzed:
the planner then estimates its rows as a handful, and the workers' claim and record queries
(``broadcast_id = :id AND user_id IN (...) AND state = 'pending'``) scanned every pending
recipient of the broadcast through ``ix_deliveries_state`` instead of looking their hundred
ids up in the primary key. After a million recipients were written that was 0.2-1.5 s a
query, and the broadcast sent at 150-250 messages a second instead of 2,000 until
autovacuum's analyze came round (a minute later at best; on a table more than ten times the
broadcast's size, not until a tenth of it has changed). Since migration 0017 that index holds
no pending recipient, so that plan is gone; the other estimates of a new broadcast's rows
(its counts, reports, an edit's or a recall's searches) still want the statistics.

Users imported are the same: until ``users`` and ``user_tags`` are analyzed, a filter by tag
and language is planned as a nested loop over rows estimated at one (a page of 1,000 of
10,000 just-imported users took 0.2-3 s, the pages after the first longer each).

So once :data:`ANALYZE_AFTER` rows or more were committed to a table since it was last
analyzed here (a broadcast of that many recipients: ``deliveries`` and ``users``; users
upserted or imported, in however many chunks: ``users`` and ``user_tags``), the store
analyzes it in the background (``ANALYZE`` samples a fixed number of rows whatever the table's
size, and replans the statements prepared on them): one run at a time, and one more after it
for the rows written meanwhile. Other backends need nothing: SQLite has no statistics until
asked and plans these by their indexes' shape, and MariaDB estimates an ``IN`` list by
looking into the index.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tgbroadcast.core.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

ANALYZE_AFTER: Final = 10_000
"""Rows written to a table since its last analysis from which it is analyzed again."""
BROADCAST_TABLES: Final = ("deliveries", "users")
"""What a broadcast's recipients are written to."""
USER_TABLES: Final = ("users", "user_tags")
"""What users upserted or imported are written to."""


class PlannerStatistics:
    """Analyzes the tables big writes grew, in the background (PostgreSQL only)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._enabled = engine.dialect.name == "postgresql"
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._written: dict[str, int] = {}
        """Rows committed to each table since this process last analyzed it."""

    def grew(self, rows: int) -> None:
        """``rows`` deliveries were just committed for one broadcast (a broadcast of fewer
        than :data:`ANALYZE_AFTER` is not counted: its own rows are few to look up)."""
        if rows >= ANALYZE_AFTER:
            self._written_to(BROADCAST_TABLES, rows)

    def users_written(self, rows: int) -> None:
        """``rows`` users were just upserted (an import's chunks add up)."""
        self._written_to(USER_TABLES, rows)

    def _written_to(self, tables: tuple[str, ...], rows: int) -> None:
        if not self._enabled:
            return
        for table in tables:
            self._written[table] = self._written.get(table, 0) + rows
        if not self._due():
            return
        if self._task is not None and not self._task.done():
            self._again = True  # analyzed once more when the run in hand ends
            return
        self._task = asyncio.create_task(self._analyze(), name="analyze-tables")

    async def wait(self) -> None:
        """Until the analysis asked for so far has run (tests)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    def _due(self) -> list[str]:
        return [table for table, rows in self._written.items() if rows >= ANALYZE_AFTER]

    async def _analyze(self) -> None:
        while True:
            self._again = False
            due = self._due()
            for table in due:
                self._written[table] = 0
            try:
                async with self._engine.connect() as connection:
                    for table in due:
                        await connection.execute(text(f"ANALYZE {table}"))
                    await connection.commit()
            except Exception as exc:  # autovacuum's analyze comes round later anyway
                logger.warning("analyzing tables failed", extra={"tables": due, "error": repr(exc)})
            if not self._again:
                return
