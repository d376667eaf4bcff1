"""SQLite's WAL is checkpointed by the store's own task, never inside a commit (on the other
backends ``background_checkpoints`` does nothing: every store test there opens one)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import text

from tests.fixtures.nats import wait_until
from tgbroadcast.core.domain.model import Content, NewBroadcast
from tgbroadcast.core.store import Store
from tgbroadcast.core.store.checkpoints import background_checkpoints, checkpoint
from tgbroadcast.core.store.engine import create_engine

RECIPIENTS = 50_000  # a WAL of many times SQLite's automatic threshold (1,000 pages)


def _wal_pages(path: Path) -> int:
    """Pages in the WAL that are not in the database file yet, read without checkpointing:
    the file's frames (after its 32-byte header, 24 bytes each plus a page)."""
    wal = path.with_name(path.name + "-wal")
    if not wal.exists():
        return 0
    with sqlite3.connect(path) as probe:
        page_size = int(probe.execute("PRAGMA page_size").fetchone()[0])
    return max(0, (wal.stat().st_size - 32) // (24 + page_size))


async def test_commits_leave_the_wal_to_the_background_task(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        async with background_checkpoints(engine, interval=3600):  # the task waits: a test hook
            async with engine.connect() as connection:
                automatic = (await connection.execute(text("PRAGMA wal_autocheckpoint"))).scalar()
            assert automatic == 0
            store = Store(engine)
            await store.migrate()
            before = path.stat().st_size
            new = NewBroadcast(content=Content(message="hi"), user_ids=tuple(range(1, RECIPIENTS)))
            await store.create_broadcast(new)
            # The commit left every page in the WAL: the database file did not grow.
            assert path.stat().st_size == before
            assert _wal_pages(path) > 1_000
            busy, pages, copied = await checkpoint(engine)
            assert (busy, copied) == (0, pages)
            assert path.stat().st_size > before
    finally:
        await engine.dispose()


async def test_an_open_store_checkpoints_by_itself(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    async with Store.open(f"sqlite+aiosqlite:///{path}") as store:
        await store.migrate()
        before = path.stat().st_size
        new = NewBroadcast(content=Content(message="hi"), user_ids=tuple(range(1, RECIPIENTS)))
        await store.create_broadcast(new)

        async def copied_into_the_file() -> bool:
            return path.stat().st_size > before

        await wait_until(copied_into_the_file)
