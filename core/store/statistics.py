"""PostgreSQL's planner statistics refreshed after a big broadcast is written.

A new broadcast's id is in none of ``deliveries``' statistics until the table is analyzed:
the planner then estimates its rows as a handful, and the workers' claim and record queries
(``broadcast_id = :id AND user_id IN (...) AND state = 'pending'``) scan every pending
recipient of the broadcast through ``ix_deliveries_state`` instead of looking their hundred
ids up in the primary key. After a million recipients were written that was 0.2-1.5 s a
query, and the broadcast sent at 150-250 messages a second instead of 2,000 until
autovacuum's analyze came round (a minute later at best; on a table more than ten times the
broadcast's size, not until a tenth of it has changed).

So after a broadcast of :data:`ANALYZE_AFTER` recipients or more is committed, the store
analyzes ``deliveries`` and ``users`` in the background (``ANALYZE`` samples a fixed number of
rows whatever the table's size, and replans the statements prepared on them): one run at a
time, and one more after it for the broadcasts written meanwhile. Other backends need
nothing: SQLite has no statistics until asked and plans these by their indexes' shape, and
MariaDB estimates an ``IN`` list by looking into the index.
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
"""Recipients of one broadcast from which the tables it grew are analyzed after it."""
_TABLES: Final = ("deliveries", "users")


class PlannerStatistics:
    """Analyzes the tables a big broadcast grew, in the background (PostgreSQL only)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._enabled = engine.dialect.name == "postgresql"
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def grew(self, rows: int) -> None:
        """``rows`` deliveries were just committed for one broadcast."""
        if not self._enabled or rows < ANALYZE_AFTER:
            return
        if self._task is not None and not self._task.done():
            self._again = True  # analyzed once more when the run in hand ends
            return
        self._task = asyncio.create_task(self._analyze(), name="analyze-deliveries")

    async def wait(self) -> None:
        """Until the analysis asked for so far has run (tests)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _analyze(self) -> None:
        while True:
            self._again = False
            try:
                async with self._engine.connect() as connection:
                    for table in _TABLES:
                        await connection.execute(text(f"ANALYZE {table}"))
                    await connection.commit()
            except Exception as exc:  # autovacuum's analyze comes round later anyway
                logger.warning("analyzing the deliveries failed", extra={"error": repr(exc)})
            if not self._again:
                return
