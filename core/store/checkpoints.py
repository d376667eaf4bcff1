"""SQLite's WAL copied back into the database in the background, not in a commit.

By default the commit that grows the WAL past 1,000 pages copies it into the database file
(an automatic checkpoint) before it returns: a million-recipient send paid 0.3-0.5 s for it in
its 202, and the worker's recorder paid for it every few seconds at 1000 outcomes a second.
A store on SQLite turns that off on its connections and checkpoints from a task of its own
instead, every :data:`CHECKPOINT_INTERVAL` while it is open, in ``PASSIVE`` mode: it copies
what no reader still needs and never blocks a writer or a reader. Several processes on one
file each run one; a checkpoint another is running makes this one a no-op. When the last
connection to the file closes, SQLite checkpoints what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, Final

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import ConnectionPoolEntry

from tgbroadcast.core.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

CHECKPOINT_INTERVAL: Final = 1.0
"""Seconds between two background checkpoints of a store's SQLite file."""
_LARGE_WAL_PAGES: Final = 262_144
"""A WAL this many pages long (1 GiB of 4 KiB pages) that a checkpoint could not empty is
logged: a reader holding an old snapshot keeps it from being reset."""


@contextlib.asynccontextmanager
async def background_checkpoints(
    engine: AsyncEngine, interval: float = CHECKPOINT_INTERVAL
) -> AsyncIterator[None]:
    """While inside, ``engine``'s SQLite connections do not checkpoint on commit and a task
    checkpoints every ``interval`` seconds. Any other backend: nothing."""
    if engine.dialect.name != "sqlite":
        yield
        return

    def no_automatic_checkpoint(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA wal_autocheckpoint = 0")
        finally:
            cursor.close()

    event.listen(engine.sync_engine, "connect", no_automatic_checkpoint)
    task = asyncio.create_task(_checkpoints(engine, interval), name="sqlite-checkpoints")
    try:
        yield
    finally:
        await cancel_and_wait(task)


async def checkpoint(engine: AsyncEngine) -> tuple[int, int, int]:
    """One ``PASSIVE`` checkpoint on a connection of ``engine``, outside any transaction:
    SQLite's ``(busy, WAL pages, pages checkpointed)``."""
    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        driver: Any = raw.driver_connection  # aiosqlite's: no BEGIN of SQLAlchemy's
        async with driver.execute("PRAGMA wal_checkpoint(PASSIVE)") as cursor:
            row = await cursor.fetchone()
    busy, pages, copied = (int(value) for value in row) if row else (0, 0, 0)
    return busy, pages, copied


async def _checkpoints(engine: AsyncEngine, interval: float) -> None:
    warned = False
    while True:
        await asyncio.sleep(interval)
        try:
            _busy, pages, copied = await checkpoint(engine)
        except Exception as exc:  # a broken or locked file: the next round tries again
            logger.warning("background checkpoint failed: %r", exc)
            continue
        if pages >= _LARGE_WAL_PAGES and copied < pages and not warned:
            warned = True
            logger.warning(
                "the SQLite WAL has %d pages and %d could be checkpointed: a long read "
                "transaction holds it",
                pages,
                copied,
                extra={"pages": pages, "checkpointed": copied},
            )
        elif copied == pages:
            warned = False
