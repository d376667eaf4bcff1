"""The store's bulk paths (``core/store/bulk.py``) on SQLite, PostgreSQL and MariaDB.

Correctness only: how fast they are is measured by ``python -m bench.accept``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text, true
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tests.fixtures.databases import temporary_database
from tgbroadcast.core.domain.model import (
    Broadcast,
    Content,
    DeliveryResult,
    DeliveryState,
    NewBroadcast,
    UserProfile,
)
from tgbroadcast.core.store import Store, create_engine, limits, statistics, users
from tgbroadcast.core.store.engine import writer
from tgbroadcast.core.store.tables import broadcasts, deliveries
from tgbroadcast.core.store.tables import users as user_table

HELLO = Content(message="hello")
AT = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
EXTREMES = (-(2**63), 2**63 - 1)
"""The smallest and largest ids a BIGINT holds: every path must carry them exactly."""


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """A second way into the database, to look at rows the store has no method for."""
    engine = create_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


def to(*user_ids: int) -> NewBroadcast:
    return NewBroadcast(content=HELLO, user_ids=user_ids)


async def pending(engine: AsyncEngine, broadcast_id: int) -> list[int]:
    statement = select(deliveries.c.user_id).where(
        deliveries.c.broadcast_id == broadcast_id, deliveries.c.state == DeliveryState.PENDING
    )
    async with engine.connect() as connection:
        return sorted((await connection.scalars(statement)).all())


async def batches(store: Store, broadcast_id: int, size: int) -> list[tuple[int, ...]]:
    return [batch async for batch in store.job_batches(broadcast_id, batch_size=size)]


async def user_ids(engine: AsyncEngine) -> list[int]:
    async with engine.connect() as connection:
        return list(await connection.scalars(select(user_table.c.id).order_by(user_table.c.id)))


async def user_rows(
    engine: AsyncEngine, *, not_created_at: datetime | None = None
) -> dict[int, tuple[Any, ...]]:
    """Users as ``(username, first_name, active, created_at, updated_at)`` by id."""
    statement = select(
        user_table.c.id,
        user_table.c.username,
        user_table.c.first_name,
        user_table.c.active,
        user_table.c.created_at,
        user_table.c.updated_at,
    )
    if not_created_at is not None:
        statement = statement.where(user_table.c.created_at != not_created_at)
    async with engine.connect() as connection:
        return {
            row[0]: (*row[1:3], bool(row[3]), *row[4:])
            for row in await connection.execute(statement)
        }


async def count(engine: AsyncEngine, table: Any, *where: Any) -> int:
    statement = select(func.count()).select_from(table).where(*where)
    async with engine.connect() as connection:
        return int(await connection.scalar(statement) or 0)


async def test_a_large_broadcast_to_known_and_new_users(store: Store, engine: AsyncEngine) -> None:
    rng = random.Random(9)
    known = rng.sample(range(1, 10**10), 6_000)
    profiled = known[:300]
    await store.upsert_users(
        [UserProfile(id=i, username=f"u{i}", first_name="Kim") for i in profiled]
    )
    first = await store.create_broadcast(to(*known))
    assert first.total == len(known)
    left = known[300:500]
    blocked = [
        DeliveryResult(
            broadcast_id=first.id, user_id=user_id, state=DeliveryState.BLOCKED, finished_at=AT
        )
        for user_id in left
    ]
    assert len((await store.record_results(blocked)).recorded) == len(left)
    before = await user_rows(engine)
    new = [-i for i in rng.sample(range(1, 10**12), 14_000)] + list(EXTREMES)
    recipients = rng.sample(known + new, len(known) + len(new))

    created = await store.create_broadcast(to(*recipients, *recipients[:1000]))

    assert created.total == len(recipients) == 20_002
    assert await store.get_broadcast(created.id) == created
    pages = await batches(store, created.id, 6_000)
    assert [len(page) for page in pages] == [6_000, 6_000, 6_000, 2_002]
    assert [user_id for page in pages for user_id in page] == sorted(recipients)
    assert await user_ids(engine) == sorted(recipients)
    tail = await store.list_users(after=sorted(recipients)[-10], limit=100)
    assert ([u.id for u in tail.users], tail.next_after) == (sorted(recipients)[-9:], None)
    # Known users are untouched: profiles, activity (200 stay inactive) and times.
    assert await user_rows(engine, not_created_at=created.created_at) == before
    fresh = (
        user_table.c.created_at == created.created_at,
        user_table.c.updated_at == created.created_at,
        user_table.c.active == true(),
        user_table.c.username.is_(None),
        user_table.c.first_name.is_(None),
        user_table.c.last_name.is_(None),
        user_table.c.language_code.is_(None),
    )
    assert await count(engine, user_table, *fresh) == len(new)

    everyone = await store.create_broadcast(NewBroadcast(content=HELLO, all_users=True))

    inactive = set(left)
    active = sorted(i for i in recipients if i not in inactive)
    assert everyone.total == len(active)
    assert await pending(engine, everyone.id) == active


async def test_a_big_broadcast_has_postgresqls_statistics_refreshed(
    store: Store, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL, once a broadcast of ``ANALYZE_AFTER`` recipients or more is committed,
    ``deliveries`` and ``users`` are analyzed in the background: a new broadcast's id in no
    statistics made the planner scan all its pending recipients for each worker's lookup of a
    hundred. The other backends have nothing to refresh."""
    monkeypatch.setattr(statistics, "ANALYZE_AFTER", 150)
    analyzed = {"deliveries": 150, "users": 150} if engine.dialect.name == "postgresql" else {}
    big = await store.create_broadcast(to(*range(1, 151)))
    await store.statistics.wait()
    assert await counted(engine) == analyzed
    small = await store.create_broadcast(to(*range(1000, 1010)))  # below: not analyzed again
    await store.statistics.wait()
    assert await counted(engine) == analyzed
    assert await pending(engine, big.id) == list(range(1, 151))
    assert len(await pending(engine, small.id)) == 10


async def test_users_upserted_in_chunks_have_postgresqls_statistics_refreshed(
    store: Store, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Users upserted (an import's chunks) adding up to ``ANALYZE_AFTER`` have ``users`` and
    ``user_tags`` analyzed in the background: until then PostgreSQL planned a filter by tag
    and language as a nested loop over rows estimated at one, and listing 10,000 users just
    imported took seconds a page."""
    monkeypatch.setattr(statistics, "ANALYZE_AFTER", 150)
    for first in (1, 101):  # 100 and then 50: together over the threshold
        chunk = range(first, min(first + 100, 151))
        await store.upsert_users([UserProfile(id=i, tags=("a", "b")) for i in chunk])
    await store.statistics.wait()
    tables = ("users", "user_tags")
    analyzed = {"users": 150, "user_tags": 300} if engine.dialect.name == "postgresql" else {}
    assert await counted(engine, tables) == analyzed


async def counted(
    engine: AsyncEngine, tables: tuple[str, ...] = ("deliveries", "users")
) -> dict[str, float]:
    """PostgreSQL's row counts of ``tables`` as of their last analysis (an analysis of a table
    this small reads every row); none on the other backends."""
    if engine.dialect.name != "postgresql":
        return {}
    query = text("SELECT relname, reltuples FROM pg_class WHERE relname = ANY(:tables)")
    async with engine.connect() as connection:
        rows = await connection.execute(query, {"tables": list(tables)})
        return {row.relname: row.reltuples for row in rows}


async def test_recipients_roll_back_with_their_broadcast(
    store: Store, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = users.add_recipients

    async def then_fail(*args: Any, **kwargs: Any) -> None:
        await real(*args, **kwargs)
        raise RuntimeError("after the recipients")

    monkeypatch.setattr(users, "add_recipients", then_fail)
    for _ in range(2):  # twice: the first attempt left nothing behind (no temporary table)
        with pytest.raises(RuntimeError, match="after the recipients"):
            await store.create_broadcast(to(*range(5_000)))
    assert (await count(engine, broadcasts), await count(engine, deliveries)) == (0, 0)
    assert await count(engine, user_table) == 0

    monkeypatch.setattr(users, "add_recipients", real)
    created = await store.create_broadcast(to(*range(5_000)))
    again = await store.create_broadcast(to(*range(2_500, 7_500)))

    assert (created.total, again.total) == (5_000, 5_000)
    assert await pending(engine, again.id) == list(range(2_500, 7_500))
    assert await count(engine, user_table) == 7_500


async def test_recipients_in_many_small_statements(
    store: Store, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "SQLITE_IDS_PER_STATEMENT", 700)
    monkeypatch.setattr(limits, "MYSQL_STATEMENT_BYTES", 4096)  # 64 rows a statement
    recipients = random.Random(3).sample(range(-5_000, 5_000), 5_000) + list(EXTREMES)

    created = await store.create_broadcast(to(*recipients))

    assert created.total == len(recipients)
    assert await pending(engine, created.id) == sorted(recipients)
    assert set(await user_rows(engine)) == set(recipients)


@pytest.fixture(
    params=[
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ]
)
async def server_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh database on a server with row locks (SQLite writers take the whole file)."""
    async with temporary_database(request.param, tmp_path) as url:
        yield url


async def test_a_user_inserted_meanwhile_is_left_as_written(server_url: str) -> None:
    """Another transaction inserts one of the recipients and commits only once the broadcast
    waits for its lock: on PostgreSQL this is the conflict that sends the users INSERT to its
    fallback, on MariaDB the INSERT IGNORE waits and skips the row."""
    await a_user_inserted_meanwhile(server_url)


@pytest.mark.postgres
async def test_postgresql_hashes_few_users_for_many_recipients(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With statistics counting few user rows for the recipients, PostgreSQL is told to hash
    them instead of probing per recipient: the same users written, the conflict's fallback
    under the same setting, and known users left as they were."""
    monkeypatch.setattr(users, "HASHED_FROM", 1_000)
    decided: list[bool] = []
    few_users = users._few_users

    async def recorded(connection: AsyncConnection, recipients: int) -> bool:
        decided.append(await few_users(connection, recipients))
        return decided[-1]

    monkeypatch.setattr(users, "_few_users", recorded)
    async with temporary_database("postgres", tmp_path) as url:
        await a_user_inserted_meanwhile(url, analyzed=True)
    assert decided == [True]


async def a_user_inserted_meanwhile(url: str, *, analyzed: bool = False) -> None:
    """A broadcast to 2,000 new users while another transaction inserts user 42 and commits
    once the broadcast waits for it (``analyzed``: PostgreSQL's statistics of ``users`` read
    first); every recipient is a user once, 42 as the other transaction wrote it."""
    recipients = list(range(1, 2_001))
    racer = {"id": 42, "username": "racer", "active": True, "created_at": AT, "updated_at": AT}
    async with Store.open(url) as store:
        await store.migrate()
        engine = create_engine(url)
        if analyzed:
            async with engine.begin() as connection:
                await connection.execute(text("ANALYZE users"))
        creating: asyncio.Task[Broadcast] | None = None
        try:
            async with writer(engine).begin() as other:
                holder = await session_id(other)
                await other.execute(user_table.insert().values(**racer))
                creating = asyncio.create_task(store.create_broadcast(to(*recipients)))
                await waiting_for(engine, holder, creating)
            created = await creating  # the other transaction has committed

            assert created.total == len(recipients)
            assert await pending(engine, created.id) == recipients
            rows = await user_rows(engine)
            assert sorted(rows) == recipients  # 42 once
            assert rows[42] == ("racer", None, True, AT, AT)
            assert await count(engine, user_table, user_table.c.created_at == AT) == 1
        finally:
            if creating is not None and not creating.done():
                creating.cancel()
                await asyncio.gather(creating, return_exceptions=True)
            await engine.dispose()


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        (2**63, OverflowError, r"^user id 9223372036854775808 is outside signed 64 bits \("),
        (-(2**63) - 1, OverflowError, r"^user id -9223372036854775809 is outside signed 64 b"),
        (2.5, TypeError, r"^user id 2\.5 is not an integer$"),
    ],
    ids=["above", "below", "float"],
)
async def test_ids_that_are_not_64_bit_integers_are_refused(
    store: Store, engine: AsyncEngine, bad: Any, error: type[Exception], message: str
) -> None:
    await store.create_broadcast(to(7))  # a known user and broadcast, left as they are
    before = await user_rows(engine)

    with pytest.raises(error, match=message):
        await store.create_broadcast(to(*range(1, 5_001), *EXTREMES, bad))

    assert (await count(engine, broadcasts), await count(engine, deliveries)) == (1, 1)
    assert await user_rows(engine) == before
    again = await store.create_broadcast(to(*range(1, 5_001), *EXTREMES))  # still usable
    assert again.total == 5_002


async def session_id(connection: AsyncConnection) -> int:
    """The server's id of ``connection``'s session (PostgreSQL: backend pid)."""
    query = "SELECT pg_backend_pid()" if connection.dialect.name == "postgresql" else None
    return int(await connection.scalar(text(query or "SELECT CONNECTION_ID()")) or 0)


async def waiting_for(
    engine: AsyncEngine, holder: int, task: asyncio.Task[Any], *, within: float = 30.0
) -> None:
    """Return once a session waits for a lock that session ``holder`` holds, as the server
    shows it; fail if ``task`` ends first or nothing waits ``within`` seconds."""
    postgres = engine.dialect.name == "postgresql"
    probe = _PG_WAITING if postgres else _MYSQL_WAITING
    # InnoDB refreshes its information_schema tables only when they were not read in the
    # last 0.1 s: polled faster, they never show the wait.
    interval = 0.01 if postgres else 0.15
    deadline = asyncio.get_running_loop().time() + within
    while True:
        async with engine.connect() as connection:
            if await connection.scalar(text(probe), {"holder": holder}):
                return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"nothing waited for session {holder}'s lock in {within} s")
        done, _ = await asyncio.wait({task}, timeout=interval)  # and sees an early end
        if done:
            task.result()  # its error, if it failed
            raise AssertionError("the broadcast did not wait for the other transaction")


_PG_WAITING = "SELECT count(*) FROM pg_stat_activity WHERE :holder = ANY(pg_blocking_pids(pid))"
_MYSQL_WAITING = """
    SELECT count(*) FROM information_schema.innodb_lock_waits AS w
    JOIN information_schema.innodb_trx AS b ON b.trx_id = w.blocking_trx_id
    WHERE b.trx_mysql_thread_id = :holder
"""
