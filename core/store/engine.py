"""Engines for the three backends, tuned so that they behave alike, and schema migration.

* SQLite (``sqlite+aiosqlite:///path``): WAL, ``synchronous=NORMAL``, foreign keys on (off
  only on :func:`migrate`'s connection while it migrates). The driver's implicit ``BEGIN`` is
  disabled and every transaction opened on a :func:`writer` engine starts with ``BEGIN
  IMMEDIATE``, so writers from any number of processes queue on the database lock instead of
  failing or losing updates: SQLite's busy handler waits a few milliseconds, then the
  ``BEGIN IMMEDIATE`` is tried again every millisecond or two on the event loop, for up to
  30 s (:data:`SQLITE_HANDLER_MS`); within a process writers take turns before, in order
  (``Store._write``). Reads start a plain deferred ``BEGIN``
  (a WAL snapshot) and never block writers. The file's folder is created when missing.
* PostgreSQL (``postgresql+asyncpg://``): defaults (READ COMMITTED).
* MySQL/MariaDB (``mysql+asyncmy://``): the connection is forced to ``charset=utf8mb4``;
  tables carry their own utf8mb4 charset (see ``tables``).

:class:`EngineOptions` size the pool of the two servers (SQLite keeps its own, above) and bound
the wait for a connection (:class:`PoolTimeout`, every backend) and a statement's run time
(:class:`StatementTimeout`: the database cancels it and its transaction rolls back).
``pgbouncer`` makes a PostgreSQL engine safe behind PgBouncer in transaction mode: no
prepared statement cache (asyncpg's nor SQLAlchemy's), a unique name for each statement it
prepares (a server connection serves many clients), and the statement timeout set with ``SET
LOCAL`` in each transaction, as PgBouncer refuses it as a startup parameter.

:func:`migrate` runs Alembic's ``upgrade head`` in one transaction that concurrent migrators
serialize on (SQLite's write lock, a PostgreSQL advisory lock, a MySQL named lock), so any
number of processes may migrate the same database at start-up.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, exc, text
from sqlalchemy.engine import URL, Connection, ExceptionContext, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry, NullPool
from sqlalchemy.util import await_

from tgbroadcast.core.store import sqlite_driver

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS: Final = 30_000
"""How long a SQLite write transaction waits for another process's lock before failing."""
SQLITE_HANDLER_MS: Final = 5
"""``busy_timeout`` of every SQLite connection: what SQLite's own busy handler may wait. A
write transaction's ``BEGIN IMMEDIATE`` that still finds the database locked tries again
within a couple of milliseconds, on the event loop, for up to :data:`SQLITE_BUSY_TIMEOUT_MS`:
the handler's sleeps grow to 100 ms, so a writer waiting in it against a process that writes
all the time (a worker recording 1000 outcomes a second) kept missing the lock for seconds."""

WRITE_OPTION: Final = "broadcasting_write"
"""Execution option that marks a connection whose transactions write (``BEGIN IMMEDIATE``)."""

SQLITE_POOL_SIZE: Final = 12
"""SQLite connections a process keeps open (and as many more it may open for a moment)."""

MIGRATION_LOCK: Final = "tgbroadcast_migrate"
_PG_MIGRATION_LOCK_KEY: Final = 0x7467_6272_6F61_6463  # "tgbroadc"
_MYSQL_LOCK_TIMEOUT_S: Final = 300


_PG_QUERY_CANCELED: Final = "57014"
_UNAVAILABLE_SQLSTATES: Final = ("08", "53", "57P")
_PG_NOT_IN_STATE: Final = "55000"
CONNECT_TIMEOUT: Final = 10.0
"""Seconds to open a PostgreSQL connection (a server that accepts and never answers)."""
_MARIADB_STATEMENT_TIMEOUT: Final = 1969  # ER_STATEMENT_TIMEOUT (max_statement_time)
_MYSQL_EXECUTION_TIMEOUT: Final = 3024  # ER_QUERY_TIMEOUT (max_execution_time)


class ConnectionOptions(Protocol):
    """What :func:`create_engine` takes besides the URL (``DatabaseSettings`` is one)."""

    @property
    def pool_size(self) -> int: ...
    @property
    def max_overflow(self) -> int: ...
    @property
    def pool_timeout(self) -> float: ...
    @property
    def statement_timeout(self) -> float: ...
    @property
    def pgbouncer(self) -> bool: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineOptions:
    """The defaults of ``database.*`` (docs/configuration.md)."""

    pool_size: int = 10
    """Connections kept open (PostgreSQL, MariaDB)."""
    max_overflow: int = 10
    """Connections opened beyond ``pool_size`` under load (PostgreSQL, MariaDB)."""
    pool_timeout: float = 30.0
    """Seconds to wait for a free connection before :class:`PoolTimeout` (every backend)."""
    statement_timeout: float = 0.0
    """Seconds a statement may run before :class:`StatementTimeout`; 0: no limit."""
    pgbouncer: bool = False
    """PostgreSQL behind PgBouncer in transaction mode."""


class PoolTimeout(exc.OperationalError):
    """Every connection of the pool stayed busy for ``pool_timeout`` seconds.

    An ``OperationalError``: the API answers 503 / ``UNAVAILABLE`` (the database cannot serve
    the call now) and the caller may retry. Nothing was sent to the database.
    """

    def __init__(self, message: str) -> None:
        super().__init__(None, None, TimeoutError(message))
        self.message = message

    def __str__(self) -> str:
        return self.message


class StatementTimeout(exc.OperationalError):
    """The database cancelled a statement that ran longer than ``statement_timeout``.

    Its transaction was rolled back: nothing of it is written. An ``OperationalError``, so
    the API answers 503 / ``UNAVAILABLE``. ``orig`` is the driver's error.
    """

    def __init__(self, message: str, orig: BaseException) -> None:
        super().__init__(None, None, orig)
        self.message = message

    def __str__(self) -> str:
        return self.message


class _Pool(AsyncAdaptedQueuePool):
    """SQLAlchemy's pool, failing with :class:`PoolTimeout` when it has no connection free."""

    def _do_get(self) -> ConnectionPoolEntry:
        try:
            return super()._do_get()
        except exc.TimeoutError:
            raise PoolTimeout(
                f"no database connection came free within {self._timeout:g} s "
                f"(database.pool_timeout): all {self.size()} + {self._max_overflow} overflow "
                "connections of this process are busy"
            ) from None


# SQLAlchemy keeps its own pools' loggers at WARNING ("Pool disposed", "Pool recreating" at
# every shutdown are INFO); this pool logs under our name, so it is quieted the same way.
logging.getLogger(f"{_Pool.__module__}.{_Pool.__qualname__}").setLevel(logging.WARNING)


def create_engine(
    url: str, options: ConnectionOptions | None = None, *, pooled: bool = True
) -> AsyncEngine:
    """An engine for ``url`` with the backend tuned as described in the module docstring.

    ``options`` default to :class:`EngineOptions`. Not ``pooled``: every connection is opened
    for its use and closed after it (readiness probes), with the same driver settings. Raises
    ``ValueError`` for an unsupported backend or an in-memory SQLite database (each connection
    would see its own empty database).
    """
    options = options or EngineOptions()
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not pooled:
            return create_async_engine(parsed, poolclass=NullPool)
        return _sqlite_engine(parsed, options.pool_timeout)
    pool: dict[str, Any] = (
        {
            "poolclass": _Pool,
            "pool_size": options.pool_size,
            "max_overflow": options.max_overflow,
            "pool_timeout": options.pool_timeout,
            "pool_pre_ping": True,
        }
        if pooled
        else {"poolclass": NullPool}
    )
    if backend == "postgresql":
        engine = _postgres_engine(parsed, options, pool)
    elif backend in ("mysql", "mariadb"):
        if "charset" not in parsed.query:
            parsed = parsed.update_query_dict({"charset": "utf8mb4"})
        engine = create_async_engine(parsed, **pool, **({"pool_recycle": 3600} if pooled else {}))
        if options.statement_timeout > 0:
            _mysql_statement_timeout(engine, options.statement_timeout)
    else:
        raise ValueError(f"unsupported database backend {backend!r} (sqlite, postgresql, mysql)")
    if options.statement_timeout > 0:
        _name_statement_timeouts(engine, options.statement_timeout)
    _name_unavailable(engine)
    return engine


def _postgres_engine(url: URL, options: ConnectionOptions, pool: dict[str, Any]) -> AsyncEngine:
    timeout_ms = round(options.statement_timeout * 1000)
    # A server that takes the TCP connection and never answers (asyncpg waits 60 s).
    connect_args: dict[str, Any] = {"timeout": CONNECT_TIMEOUT}
    if options.pgbouncer:
        # PgBouncer gives each transaction whichever server connection is free: a statement
        # prepared (and cached) on one is missing on the next, and two clients' numbered
        # names collide on one. So: no cache, and a name nobody else uses.
        connect_args["statement_cache_size"] = 0
        connect_args["prepared_statement_cache_size"] = 0
        connect_args["prepared_statement_name_func"] = _statement_name
    elif timeout_ms > 0:
        connect_args["server_settings"] = {"statement_timeout": str(timeout_ms)}
    engine = create_async_engine(url, connect_args=connect_args, **pool)
    if options.pgbouncer and timeout_ms > 0:
        # PgBouncer refuses statement_timeout as a startup parameter (and a session SET
        # would stay on a server connection other clients get): set it per transaction.
        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(connection: Connection) -> None:
            connection.exec_driver_sql(f"SET LOCAL statement_timeout = {timeout_ms}")

    return engine


def _statement_name() -> str:
    return f"__tgb_{uuid.uuid4().hex}__"


def _mysql_statement_timeout(engine: AsyncEngine, seconds: float) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT VERSION()")
            (version,) = cursor.fetchone()
            if "mariadb" in str(version).lower():
                cursor.execute(f"SET SESSION max_statement_time = {seconds:.6f}")
            else:  # MySQL: SELECTs only
                cursor.execute(f"SET SESSION max_execution_time = {max(1, round(seconds * 1000))}")
        finally:
            cursor.close()


def _name_statement_timeouts(engine: AsyncEngine, seconds: float) -> None:
    """Raise :class:`StatementTimeout` for a statement the database cancelled for its time.

    Returned, not raised: a ``handle_error`` listener that raises stops the chain, and the
    store's error counter (``Store.on_error``, registered later) would miss the timeout."""

    @event.listens_for(engine.sync_engine, "handle_error")
    def _on_error(context: ExceptionContext) -> StatementTimeout | None:
        orig = context.original_exception
        if getattr(orig, "sqlstate", None) == _PG_QUERY_CANCELED or (
            context.dialect.name in ("mysql", "mariadb")
            and orig.args
            and orig.args[0] in (_MARIADB_STATEMENT_TIMEOUT, _MYSQL_EXECUTION_TIMEOUT)
        ):
            return StatementTimeout(
                f"a database statement ran longer than {seconds:g} s "
                "(database.statement_timeout) and was cancelled; its transaction was rolled back",
                orig,
            )
        return None


def _name_unavailable(engine: AsyncEngine) -> None:
    """Raise :class:`~sqlalchemy.exc.OperationalError` (the API's 503 / ``UNAVAILABLE``) for a
    database that is down rather than a statement that is wrong.

    asyncpg's errors reach SQLAlchemy as a plain ``DBAPIError``: a connection lost under a
    statement (a restart, a failover, ``pg_terminate_backend``) and PostgreSQL's refusals to
    connect — SQLSTATE classes 08 (connection), 53 (too many connections, out of resources),
    57P (shutting down, starting up) and "not currently accepting connections" — were
    answered as an internal error."""

    @event.listens_for(engine.sync_engine, "handle_error")
    def _on_error(context: ExceptionContext) -> exc.OperationalError | None:
        raised = context.sqlalchemy_exception
        if context.is_pre_ping or isinstance(
            raised, exc.OperationalError | exc.InterfaceError | exc.IntegrityError | None
        ):
            return None
        orig = context.original_exception
        state = str(getattr(orig, "sqlstate", None) or "")
        if not (
            context.is_disconnect
            or state.startswith(_UNAVAILABLE_SQLSTATES)
            or (state == _PG_NOT_IN_STATE and "accepting connections" in str(orig))
        ):
            return None
        return exc.OperationalError(
            context.statement,
            context.parameters,
            orig,
            connection_invalidated=context.is_disconnect,
        )


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


def _sqlite_engine(url: URL, pool_timeout: float) -> AsyncEngine:
    database = url.database or ""
    if database in ("", ":memory:") or "mode=memory" in str(url):
        raise ValueError("SQLite needs a database file: sqlite+aiosqlite:///path/to/file.db")
    if not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    # Each connection is a thread of aiosqlite's: the pool keeps 12 open (with 5, a busy
    # worker opened and closed connections, and threads, several times a second) and opens
    # up to 12 more for a moment.
    engine = create_async_engine(
        url,
        module=sqlite_driver.dbapi(),  # a statement: one hand-off to aiosqlite's thread
        poolclass=_Pool,
        pool_size=SQLITE_POOL_SIZE,
        max_overflow=SQLITE_POOL_SIZE,
        pool_timeout=pool_timeout,
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # No implicit BEGIN from the driver: _on_begin emits our own.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_HANDLER_MS}")
            _enable_wal(cursor)
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        if not connection.get_execution_options().get(WRITE_OPTION, False):
            _begin(connection, "BEGIN")
            return
        deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                _begin(connection, "BEGIN IMMEDIATE")
                return
            except exc.OperationalError as error:
                if "locked" not in str(error.orig) or time.monotonic() > deadline:
                    raise
            # SQLAlchemy's greenlet, on the event loop: other tasks run meanwhile.
            await_(asyncio.sleep(random.uniform(0.0005, 0.002)))

    return engine


def _begin(connection: Connection, statement: str) -> None:
    """``statement`` run by aiosqlite's connection itself: one hand-off to its thread and none
    of SQLAlchemy's execution path (a cursor, an execution context and its events, for two
    fixed words on every transaction). A failure is raised wrapped as ``exec_driver_sql``
    raises it (``OperationalError`` for a locked database, the driver's error as ``orig``)."""
    driver = connection.connection.driver_connection
    if driver is None:  # not an open connection: SQLAlchemy's own path says why
        connection.exec_driver_sql(statement)
        return
    try:
        await_(driver.execute(statement))
    except sqlite3.Error as error:
        raise exc.DBAPIError.instance(statement, None, error, sqlite3.Error) from error


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for our migrations, without any ini file."""
    config = Config()
    config.set_main_option("script_location", "tgbroadcast.core.store:migrations")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


async def migrate(engine: AsyncEngine) -> None:
    """Upgrade the schema to the newest revision; a no-op when it is already there.

    A schema at a revision this version does not know was migrated by a newer release (a
    rolling upgrade migrates first, and an old process may restart after that): it is left
    as it is, with a warning, and the process runs on it — every revision only adds, but for
    0006's new keys of users (docs/operations.md, rolling upgrades).

    ``statement_timeout`` does not apply: waiting for another migrator and a migration of a
    big table may take longer.

    On SQLite the migration runs with foreign keys off (Alembic's batch mode rebuilds a table
    by copying it and dropping the original; with them on, dropping ``broadcasts`` would
    delete every row referencing it through ``ON DELETE CASCADE``). Before it commits,
    ``PRAGMA foreign_key_check`` must find no broken reference, or the migration fails
    (``RuntimeError``) and rolls back; the connection goes back to the pool with foreign keys
    on again (or is closed)."""
    async with writer(engine).connect() as connection:
        dialect = connection.dialect.name
        if dialect in ("mysql", "mariadb"):
            variable = (
                "max_statement_time"
                if getattr(connection.dialect, "is_mariadb", False)
                else "max_execution_time"
            )
            await connection.execute(text(f"SET SESSION {variable} = 0"))
            try:
                await _mysql_lock(connection)
                try:
                    await _upgrade(connection)
                finally:
                    await connection.execute(
                        text("SELECT RELEASE_LOCK(:name)"), {"name": MIGRATION_LOCK}
                    )
                    await connection.commit()
            finally:
                await connection.invalidate()  # not back to the pool without its time limit
        elif dialect == "sqlite":
            await connection.run_sync(_sqlite_foreign_keys, False)
            try:
                await _upgrade(connection)
            finally:
                await _sqlite_foreign_keys_back_on(connection)
        else:
            await _upgrade(connection)


async def _upgrade(connection: AsyncConnection) -> None:
    async with connection.begin():
        if connection.dialect.name == "postgresql":
            await connection.execute(text("SET LOCAL statement_timeout = 0"))
            await connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK_KEY}
            )
        await connection.run_sync(_upgrade_sync)


def _sqlite_foreign_keys(connection: Connection, on: bool) -> None:
    """Turn SQLite's foreign keys on or off on ``connection``, outside any transaction.

    The pragma is a no-op inside a transaction, and SQLAlchemy would begin one (``BEGIN``)
    before any statement it runs itself: so it goes to the driver's connection directly, and
    is read back. Raises ``RuntimeError`` if it did not take effect.
    """
    if connection.in_transaction():
        raise RuntimeError("PRAGMA foreign_keys cannot change inside a transaction")
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(f"PRAGMA foreign_keys = {'ON' if on else 'OFF'}")
        cursor.execute("PRAGMA foreign_keys")
        row = cursor.fetchone()
    finally:
        cursor.close()
    if row is None or bool(row[0]) != on:
        raise RuntimeError(f"SQLite kept foreign keys {'off' if on else 'on'}")


async def _sqlite_foreign_keys_back_on(connection: AsyncConnection) -> None:
    """Foreign keys on again before ``connection`` goes back to the pool; if that fails (the
    connection broke, or is still in a transaction), the connection is closed instead."""
    try:
        await connection.run_sync(_sqlite_foreign_keys, True)
    except BaseException as error:
        logger.warning("closing the migration's SQLite connection: foreign keys stayed off")
        await connection.invalidate()
        if not isinstance(error, Exception):
            raise  # cancelled: the connection is closed, the cancellation goes on


def _check_foreign_keys(connection: Connection) -> None:
    """Fail (``RuntimeError``) if a row of SQLite's database references a missing row."""
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        found: dict[tuple[str, str], int] = {}
        for table, _rowid, parent, _key in broken:
            found[(table, parent)] = found.get((table, parent), 0) + 1
        raise RuntimeError(
            "the migration left rows whose referenced row is missing ("
            + ", ".join(f"{n} in {table} -> {parent}" for (table, parent), n in found.items())
            + "); nothing was changed"
        )


@dataclass(frozen=True, slots=True)
class _Revisions:
    """What this version's migration scripts hold."""

    known: frozenset[str]
    heads: frozenset[str]
    newest: str | None


@functools.cache
def _revisions() -> _Revisions:
    """The scripts' revisions, read once per process: reading them is compiling every script
    (most of a ``migrate()`` that finds the schema current), and they do not change while it
    runs."""
    script = ScriptDirectory.from_config(alembic_config())
    return _Revisions(
        known=frozenset(revision.revision for revision in script.walk_revisions()),
        heads=frozenset(script.get_heads()),
        newest=script.get_current_head(),
    )


def _upgrade_sync(connection: Connection) -> None:
    revisions = _revisions()
    current = MigrationContext.configure(connection).get_current_heads()
    newer = [revision for revision in current if revision not in revisions.known]
    if newer:
        logger.warning(
            "the database schema is at revision %s, which this version does not know (its "
            "newest is %s): a newer release migrated it; running on it without migrating",
            ", ".join(newer),
            revisions.newest,
            extra={"revision": ", ".join(newer)},
        )
        return
    if set(current) != revisions.heads:
        command.upgrade(alembic_config(connection), "head")
        if connection.dialect.name == "sqlite":
            _check_foreign_keys(connection)
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
