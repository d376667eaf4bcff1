"""``database.*`` pool settings on the real servers, and the store behind a real PgBouncer.

* ``pool_size + max_overflow`` bound the connections a process opens (counted by the server,
  in ``pg_stat_activity`` / ``PROCESSLIST``, for the test's own database).
* With every connection held, the next call fails after ``pool_timeout`` with
  :class:`PoolTimeout`, an error the API answers with 503 / ``UNAVAILABLE``.
* ``statement_timeout`` has the database cancel a long statement: :class:`StatementTimeout`,
  and the transaction's earlier writes are gone.
* Behind PgBouncer in transaction mode the store works with ``pgbouncer: true`` (migrate,
  broadcasts, many concurrent transactions, the statement timeout), and without it fails
  with prepared statement errors: the setting is what makes it work.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from tests.fixtures.databases import ADMIN_DATABASE, postgres_admin, temporary_database
from tests.fixtures.nats import wait_until
from tests.fixtures.pgbouncer import running_pgbouncer
from tests.fixtures.services import free_port
from tgbroadcast.core.domain.errors import BACKEND_UNAVAILABLE
from tgbroadcast.core.domain.model import BroadcastStatus, Content, NewBroadcast
from tgbroadcast.core.store import Store
from tgbroadcast.core.store import engine as engine_module
from tgbroadcast.core.store.engine import (
    EngineOptions,
    PoolTimeout,
    StatementTimeout,
    create_engine,
)

SERVERS = [
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("mariadb", id="mariadb", marks=pytest.mark.mariadb),
]
SLEEP = {"postgres": "SELECT pg_sleep(60)", "mariadb": "SELECT SLEEP(60)"}


@contextlib.asynccontextmanager
async def _engine(url: str, options: EngineOptions) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(url, options)
    try:
        yield engine
    finally:
        await engine.dispose()


async def _server_connections(backend: str, url: str) -> int:
    """Connections the server has open to the database of ``url`` (from an admin session)."""
    parsed = make_url(url)
    name = parsed.database
    admin = parsed.set(database=ADMIN_DATABASE).render_as_string(hide_password=False)
    if backend == "postgres":
        query = text("SELECT count(*) FROM pg_stat_activity WHERE datname = :name")
    else:
        query = text("SELECT count(*) FROM information_schema.PROCESSLIST WHERE DB = :name")
    engine = create_async_engine(admin, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            return int((await connection.execute(query, {"name": name})).scalar_one())
    finally:
        await engine.dispose()


@pytest.mark.parametrize("backend", SERVERS)
async def test_pool_size_and_overflow_bound_the_connections(backend: str, tmp_path: Path) -> None:
    options = EngineOptions(pool_size=2, max_overflow=3, pool_timeout=0.2)
    async with (
        temporary_database(backend, tmp_path) as url,
        _engine(url, options) as engine,
        contextlib.AsyncExitStack() as held,
    ):
        for _ in range(5):
            connection = await held.enter_async_context(engine.connect())
            await connection.execute(text("SELECT 1"))
        assert await _server_connections(backend, url) == 5

        with pytest.raises(PoolTimeout, match=r"database\.pool_timeout") as caught:
            await held.enter_async_context(engine.connect())
        assert isinstance(caught.value, BACKEND_UNAVAILABLE)  # 503 / UNAVAILABLE
        assert await _server_connections(backend, url) == 5

        await held.aclose()  # overflow connections close, pool_size stay open

        async def pool_size_left() -> bool:  # a closed connection's backend exits a moment later
            return await _server_connections(backend, url) == 2

        await wait_until(pool_size_left)
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT 1"))).scalar_one() == 1


@pytest.mark.parametrize("backend", SERVERS)
async def test_a_store_call_waits_pool_timeout_then_fails_unavailable(
    backend: str, tmp_path: Path
) -> None:
    options = EngineOptions(pool_size=1, max_overflow=0, pool_timeout=0.2)
    async with (
        temporary_database(backend, tmp_path) as url,
        Store.open(url, options) as store,
    ):
        await store.migrate()
        created = await store.create_broadcast(
            NewBroadcast(content=Content(message="hi"), user_ids=(1,))
        )
        async with store._engine.connect() as only:  # the pool's one connection, held
            await only.execute(text("SELECT 1"))
            with pytest.raises(PoolTimeout) as caught:
                await store.get_broadcast(created.id)
            assert isinstance(caught.value, BACKEND_UNAVAILABLE)
        assert (await store.get_broadcast(created.id)).id == created.id
        await store.ping()  # readiness has a connection of its own


@pytest.mark.postgres
async def test_postgresql_going_away_is_unavailable_not_an_internal_error(
    tmp_path: Path,
) -> None:
    """A restart or failover (connections terminated under a statement) and a database that
    refuses connections: the API's 503 / UNAVAILABLE, as when the server cannot be reached;
    asyncpg's errors reached the service as plain DBAPIErrors, answered as internal errors."""
    async with (
        temporary_database("postgres", tmp_path) as url,
        Store.open(url, EngineOptions()) as store,
    ):
        await store.migrate()
        created = await store.create_broadcast(
            NewBroadcast(content=Content(message="hi"), user_ids=(1,))
        )
        name = make_url(url).database
        others = f"datname = '{name}' AND pid <> pg_backend_pid()"

        async def terminate_when_sleeping() -> None:
            async def sleeping() -> bool:
                return await _server_sleeps(url)

            await wait_until(sleeping)
            await postgres_admin(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {others}"
            )

        with pytest.raises(DBAPIError) as caught:
            async with store._engine.connect() as connection:
                await asyncio.gather(
                    connection.execute(text("SELECT pg_sleep(60)")), terminate_when_sleeping()
                )
        assert isinstance(caught.value, BACKEND_UNAVAILABLE), caught.value
        await postgres_admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        try:
            await postgres_admin(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {others}"
            )
            with pytest.raises(DBAPIError) as caught:
                await store.get_broadcast(created.id)
            assert isinstance(caught.value, BACKEND_UNAVAILABLE), caught.value
            assert "not currently accepting connections" in str(caught.value)
        finally:
            await postgres_admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        assert (await store.get_broadcast(created.id)).id == created.id


async def _server_sleeps(url: str) -> bool:
    admin = make_url(url).set(database=ADMIN_DATABASE).render_as_string(hide_password=False)
    engine = create_async_engine(admin, poolclass=NullPool)
    query = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = :name AND query LIKE 'SELECT pg_sleep%'"
    )
    try:
        async with engine.connect() as connection:
            found = await connection.execute(query, {"name": make_url(url).database})
            return int(found.scalar_one()) > 0
    finally:
        await engine.dispose()


@pytest.mark.parametrize("backend", SERVERS)
async def test_statement_timeout_cancels_and_rolls_back(backend: str, tmp_path: Path) -> None:
    options = EngineOptions(statement_timeout=0.2)
    async with temporary_database(backend, tmp_path) as url, _engine(url, options) as engine:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE written (x INTEGER)"))

        async with engine.connect() as connection:
            await connection.execute(text("INSERT INTO written (x) VALUES (1)"))
            with pytest.raises(StatementTimeout, match=r"database\.statement_timeout") as caught:
                await connection.execute(text(SLEEP[backend]))
            assert isinstance(caught.value, BACKEND_UNAVAILABLE)
            await connection.rollback()

        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT count(*) FROM written"))).scalar() == 0
            # A statement within the limit runs.
            assert (await connection.execute(text("SELECT 1"))).scalar_one() == 1


@pytest.mark.parametrize("backend", SERVERS)
async def test_migrate_is_not_limited_and_leaves_the_limit_on_the_pool(
    backend: str, tmp_path: Path
) -> None:
    options = EngineOptions(pool_size=1, max_overflow=0, statement_timeout=0.2)
    async with temporary_database(backend, tmp_path) as url, Store.open(url, options) as store:
        await store.migrate()
        await store.migrate()
        errors: list[None] = []
        store.on_error(lambda: errors.append(None))  # tgb_database_errors_total
        with pytest.raises(StatementTimeout):
            await _sleep(store._engine, SLEEP[backend])
        assert len(errors) == 1  # a statement timeout is a database error too


async def _sleep(engine: AsyncEngine, statement: str) -> None:
    async with engine.connect() as connection:
        await connection.execute(text(statement))


async def test_sqlite_keeps_its_pool_and_ignores_statement_timeout(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    options = EngineOptions(pool_size=1, max_overflow=0, statement_timeout=0.01)
    async with Store.open(url, options) as store:
        await store.migrate()
        held = [await store._engine.connect() for _ in range(3)]  # beyond pool_size + overflow
        try:
            created = await store.create_broadcast(
                NewBroadcast(content=Content(message="hi"), user_ids=(1, 2))
            )
        finally:
            for connection in held:
                await connection.close()
        assert created.total == 2


async def test_a_sqlite_write_waits_for_another_processs_write_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write transaction's ``BEGIN IMMEDIATE`` queues on a lock held elsewhere (another
    process's connection: here the ``sqlite3`` module's) and runs after it; past its deadline
    it fails as SQLAlchemy's ``OperationalError``, the driver's "database is locked" as
    ``orig``. Reads are not held up."""
    path = tmp_path / "store.db"
    async with Store.open(f"sqlite+aiosqlite:///{path}") as store:
        await store.migrate()
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            write = asyncio.create_task(
                store.create_broadcast(NewBroadcast(content=Content(message="hi"), user_ids=(1,)))
            )
            assert await store.outcome_counts(1) == {}  # a read: not held up
            assert not write.done()
            other.execute("COMMIT")
            created = await write
            assert created.total == 1

            monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", 50)
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(OperationalError) as refused:
                await store.create_broadcast(
                    NewBroadcast(content=Content(message="hi"), user_ids=(2,))
                )
            assert isinstance(refused.value.orig, sqlite3.OperationalError)
            assert "database is locked" in str(refused.value.orig)
            other.execute("ROLLBACK")
        finally:
            other.close()


# -- PgBouncer --------------------------------------------------------------------------------


def _through(url: str, addr: tuple[str, int]) -> str:
    host, port = addr
    return make_url(url).set(host=host, port=port).render_as_string(hide_password=False)


async def _busy(store: Store, tasks: int, round_: int) -> None:
    """Many tasks at once, each a few transactions: creating, reading, moving broadcasts."""

    async def one(index: int) -> None:
        new = NewBroadcast(
            content=Content(message=f"m{index}"),
            user_ids=tuple(range(index * 10 + 1, index * 10 + 11)),
            idempotency_key=f"k{round_}-{index}",
        )
        created = await store.create_broadcast(new)
        read = await store.get_broadcast(created.id, actions=True)
        assert read.total == 10
        assert read.content.message == f"m{index}"

    await asyncio.gather(*(one(index) for index in range(tasks)))


@pytest.mark.postgres
async def test_the_store_works_through_pgbouncer_with_pgbouncer_true(tmp_path: Path) -> None:
    # A bound no statement of the busy rounds nears, even on a loaded machine.
    options = EngineOptions(pgbouncer=True, statement_timeout=2)
    async with (
        temporary_database("postgres", tmp_path) as direct,
        running_pgbouncer() as addr,
        Store.open(_through(direct, addr), options) as store,
    ):
        await store.migrate()
        big = await store.create_broadcast(
            NewBroadcast(content=Content(message="all"), user_ids=tuple(range(1, 5001)))
        )
        assert (await store.get_broadcast(big.id)).total == 5000
        assert big.status == BroadcastStatus.QUEUED
        for round_ in range(3):
            await _busy(store, tasks=40, round_=round_)
        assert len(await store.list_broadcasts(statuses=(), before=None, limit=500)) == 121
        await store.ping()

        # statement_timeout holds through PgBouncer (SET LOCAL in each transaction).
        with pytest.raises(StatementTimeout):
            async with store._engine.begin() as connection:
                await connection.execute(text("SELECT pg_sleep(60)"))


# One process of the service: a pooled engine runs a query, says so, then keeps its connection
# (and asyncpg's prepared statements) until its stdin closes.
_PROCESS = """
import asyncio, sys
from sqlalchemy import text
from tgbroadcast.core.store.engine import EngineOptions, create_engine

async def main():
    engine = create_engine(sys.argv[1], EngineOptions(pgbouncer=sys.argv[2] == "true"))
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
            await connection.commit()
        print("ok", flush=True)
    except Exception as error:
        print(f"error {error}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await engine.dispose()

asyncio.run(main())
"""


@pytest.mark.postgres
@pytest.mark.parametrize("pgbouncer", [True, False], ids=["pgbouncer-true", "pgbouncer-false"])
async def test_two_processes_share_a_pgbouncer_server_connection(
    pgbouncer: bool, tmp_path: Path
) -> None:
    """Each process's asyncpg names its prepared statements ``__asyncpg_stmt_1__``, 2, ... and
    keeps them: on the one server connection PgBouncer gives both, the second one's names
    collide — unless ``pgbouncer: true`` (no cache, unique names)."""
    async with (
        temporary_database("postgres", tmp_path) as direct,
        running_pgbouncer(server_connections=1) as addr,
        contextlib.AsyncExitStack() as processes,
    ):
        url = _through(direct, addr)
        answers = [await processes.enter_async_context(_process(url, pgbouncer)) for _ in "ab"]
        if pgbouncer:
            assert answers == ["ok", "ok"]
        else:
            assert answers[0] == "ok"
            assert "prepared statement" in answers[1], answers[1]


@contextlib.asynccontextmanager
async def _process(url: str, pgbouncer: bool) -> AsyncIterator[str]:
    """Run :data:`_PROCESS`; yield its first line; end it on exit."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _PROCESS,
        url,
        "true" if pgbouncer else "false",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        yield (await process.stdout.readline()).decode().strip()
    finally:
        process.stdin.close()
        await process.wait()


@pytest.mark.postgres
async def test_statement_timeout_without_pgbouncer_true_is_refused_by_pgbouncer(
    tmp_path: Path,
) -> None:
    async with (
        temporary_database("postgres", tmp_path) as direct,
        running_pgbouncer() as addr,
        _engine(_through(direct, addr), EngineOptions(statement_timeout=1)) as engine,
    ):
        with pytest.raises(DBAPIError, match="unsupported startup parameter"):
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))


@pytest.mark.parametrize("backend", SERVERS)
async def test_a_refused_connection_counts_as_a_database_error(
    backend: str, tmp_path: Path
) -> None:
    """tgb_database_errors_total rises during an outage (the runbook's sign): a connection
    the database refuses is an error too, though it reaches no statement's error handler."""
    async with temporary_database(backend, tmp_path) as url:
        dead = make_url(url).set(host="127.0.0.1", port=free_port())
        async with Store.open(dead.render_as_string(hide_password=False)) as store:
            errors: list[None] = []
            store.on_error(lambda: errors.append(None))
            with pytest.raises(BACKEND_UNAVAILABLE):
                await store.get_broadcast(1)
            assert len(errors) == 1
