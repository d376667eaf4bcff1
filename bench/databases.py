"""The databases a benchmark's service runs on, and how big they grew.

SQLite is the service's default file in the run's data folder; PostgreSQL and MariaDB are a
database of the run's own on the local server (created and dropped by
:func:`bench.accept.database`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from bench.report import progress


@contextlib.asynccontextmanager
async def database_dsn(backend: str) -> AsyncIterator[str | None]:
    """``TGB_DATABASE_DSN`` for ``backend``: "" for SQLite in the data folder, a new
    PostgreSQL or MariaDB database (dropped on exit), or ``None`` when that server cannot be
    used."""
    if backend == "sqlite":
        yield ""
        return
    from bench.accept import ADMIN_URLS, database

    async with contextlib.AsyncExitStack() as stack:
        try:
            url = await stack.enter_async_context(database(backend, ADMIN_URLS[backend]))
        except Exception as exc:  # any failure to reach the server: measure without it
            progress(f"{backend} is not usable: {exc!r}")
            yield None
            return
        yield url


async def size_bytes(dsn: str, data_dir: Path) -> int:
    """The database's size: SQLite's pages (``page_count * page_size``, which counts what
    still waits in the WAL), PostgreSQL's ``pg_database_size``, or MariaDB's data and index
    lengths (InnoDB's estimate, refreshed by ``ANALYZE TABLE``)."""
    if not dsn:
        url = f"sqlite+aiosqlite:///{data_dir / 'tgbroadcast.db'}"
        pages = int(await _scalar(url, "PRAGMA page_count"))
        return pages * int(await _scalar(url, "PRAGMA page_size"))
    if dsn.startswith("postgresql"):
        return int(await _scalar(dsn, "SELECT pg_database_size(current_database())"))
    return await _mariadb_size(dsn)


async def _mariadb_size(dsn: str) -> int:
    """InnoDB's data and index lengths, after ``ANALYZE TABLE`` has refreshed them."""
    engine = create_async_engine(dsn, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            tables = (
                await connection.execute(
                    text(
                        "SELECT table_name FROM information_schema.tables "
                        "WHERE table_schema = DATABASE()"
                    )
                )
            ).scalars()
            names = ", ".join(f"`{name}`" for name in tables)
            if names:
                await connection.execute(text(f"ANALYZE TABLE {names}"))
            total = await connection.execute(
                text(
                    "SELECT COALESCE(SUM(data_length + index_length), 0) "
                    "FROM information_schema.tables WHERE table_schema = DATABASE()"
                )
            )
            return int(total.scalar_one())
    finally:
        await engine.dispose()


async def _scalar(dsn: str, statement: str) -> str:
    engine = create_async_engine(dsn, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            return str((await connection.execute(text(statement))).scalar_one())
    finally:
        await engine.dispose()
