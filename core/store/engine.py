"""Engines for the three backends, tuned so that they behave alike, and schema migration.

* SQLite (``sqlite+aiosqlite:///path``): WAL, ``busy_timeout`` 30 s, ``synchronous=NORMAL``,
  foreign keys on. The driver's implicit ``BEGIN`` is disabled and every transaction opened
  on a :func:`writer` engine starts with ``BEGIN IMMEDIATE``, so writers from any number of
  processes queue on the database lock instead of failing or losing updates. Reads start a
  plain deferred ``BEGIN`` (a WAL snapshot) and never block writers. The file's folder is
  created when missing.
* PostgreSQL (``postgresql+asyncpg://``): defaults (READ COMMITTED).
* MySQL/MariaDB (``mysql+asyncmy://``): the connection is forced to ``charset=utf8mb4``;
  tables carry their own utf8mb4 charset (see ``tables``).

:func:`migrate` runs Alembic's ``upgrade head`` in one transaction that concurrent migrators
serialize on (SQLite's write lock, a PostgreSQL advisory lock, a MySQL named lock), so any
number of processes may migrate the same database at start-up.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any, Final

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.util import await_

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS: Final = 30_000
"""How long a SQLite connection waits for another process's lock before failing."""

WRITE_OPTION: Final = "broadcasting_write"
"""Execution option that marks a connection whose transactions write (``BEGIN IMMEDIATE``)."""

SQLITE_POOL_SIZE: Final = 12
"""SQLite connections a process keeps open (and as many more it may open for a moment)."""

MIGRATION_LOCK: Final = "tgbroadcast_migrate"
_PG_MIGRATION_LOCK_KEY: Final = 0x7467_6272_6F61_6463  # "tgbroadc"
_MYSQL_LOCK_TIMEOUT_S: Final = 300


def create_engine(url: str) -> AsyncEngine:
    """An engine for ``url`` with the backend tuned as described in the module docstring.

    Raises ``ValueError`` for an unsupported backend or an in-memory SQLite database (each
    connection would see its own empty database).
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed)
    if backend == "postgresql":
        return create_async_engine(parsed, pool_pre_ping=True)
    if backend in ("mysql", "mariadb"):
        if "charset" not in parsed.query:
            parsed = parsed.update_query_dict({"charset": "utf8mb4"})
        return create_async_engine(parsed, pool_pre_ping=True, pool_recycle=3600)
    raise ValueError(f"unsupported database backend {backend!r} (sqlite, postgresql, mysql)")


def _enable_wal(cursor: Any) -> None:
    """``PRAGMA journal_mode = WAL`` on a connection being opened.

    Switching a new database file to WAL needs an exclusive lock, and SQLite answers "database
    is locked" at once — without its busy handler — when another connection (two processes
    migrating one new file) switches it at the same moment. Retried, without blocking the event
    loop, for up to the busy timeout; once the file is in WAL mode the pragma takes no lock.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        await_(asyncio.sleep(delay))  # this runs in SQLAlchemy's greenlet, on the event loop
        delay = min(delay * 2, 0.2)


def writer(engine: AsyncEngine) -> AsyncEngine:
    """A view of ``engine`` (same pool) whose transactions are write transactions."""
    return engine.execution_options(**{WRITE_OPTION: True})


def _sqlite_engine(url: URL) -> AsyncEngine:
    database = url.database or ""
    if database in ("", ":memory:") or "mode=memory" in str(url):
        raise ValueError("SQLite needs a database file: sqlite+aiosqlite:///path/to/file.db")
    if not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    # Each connection is a thread of aiosqlite's: the pool keeps 12 open (with 5, a busy
    # worker opened and closed connections, and threads, several times a second) and opens
    # up to 12 more for a moment.
    engine = create_async_engine(url, pool_size=SQLITE_POOL_SIZE, max_overflow=SQLITE_POOL_SIZE)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # No implicit BEGIN from the driver: _on_begin emits our own.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            _enable_wal(cursor)
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        write = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for our migrations, without any ini file."""
    config = Config()
    config.set_main_option("script_location", "tgbroadcast.core.store:migrations")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


async def migrate(engine: AsyncEngine) -> None:
    """Upgrade the schema to the newest revision; a no-op when it is already there."""
    async with writer(engine).connect() as connection:
        dialect = connection.dialect.name
        if dialect in ("mysql", "mariadb"):
            await _mysql_lock(connection)
            try:
                await _upgrade(connection)
            finally:
                await connection.execute(
                    text("SELECT RELEASE_LOCK(:name)"), {"name": MIGRATION_LOCK}
                )
                await connection.commit()
        else:
            await _upgrade(connection)


async def _upgrade(connection: AsyncConnection) -> None:
    async with connection.begin():
        if connection.dialect.name == "postgresql":
            await connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK_KEY}
            )
        await connection.run_sync(_upgrade_sync)


def _upgrade_sync(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")
    logger.debug("schema at head")


async def _mysql_lock(connection: AsyncConnection) -> None:
    result = await connection.execute(
        text("SELECT GET_LOCK(:name, :timeout)"),
        {"name": MIGRATION_LOCK, "timeout": _MYSQL_LOCK_TIMEOUT_S},
    )
    acquired = result.scalar()
    await connection.commit()
    if acquired != 1:
        raise TimeoutError(f"another process held the migration lock for {_MYSQL_LOCK_TIMEOUT_S} s")
