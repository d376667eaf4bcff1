"""The store's conformance suite: every test runs on SQLite, PostgreSQL and MariaDB.

``database_url`` comes from ``tests/fixtures/databases.py`` (registered by the conftest).
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from tests.fixtures.databases import temporary_database
from tgbroadcast.core.domain.errors import NotFound
from tgbroadcast.core.domain.model import (
    Broadcast,
    BroadcastStatus,
    Content,
    DeliveryResult,
    DeliveryState,
    MediaType,
    NewBroadcast,
    UserProfile,
)
from tgbroadcast.core.store import Recorded, Store, create_engine
from tgbroadcast.core.store.engine import alembic_config
from tgbroadcast.core.store.tables import metadata

HELLO = Content(message="hello")
AT = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
ROOT = Path(__file__).resolve().parent.parent

HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()
"""The newest migration: what every migrated database must be at."""


@pytest.fixture(autouse=True)
def database_warned_nothing(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """MariaDB reports truncation, charset and deprecation problems only as warnings."""
    yield
    warnings = [
        record.getMessage()
        for record in caplog.records
        if record.name.startswith("asyncmy") and record.levelno >= logging.WARNING
    ]
    # Alembic names its version table's primary key, which MySQL/MariaDB ignore (a note).
    assert [w for w in warnings if "alembic_version_pkc" not in w] == []


def to(*user_ids: int) -> NewBroadcast:
    return NewBroadcast(content=HELLO, user_ids=user_ids)


def sent(broadcast_id: int, user_id: int, message_id: int = 1) -> DeliveryResult:
    return DeliveryResult(
        broadcast_id=broadcast_id,
        user_id=user_id,
        state=DeliveryState.SENT,
        finished_at=AT,
        message_id=message_id,
    )


def failed(broadcast_id: int, user_id: int, error: str = "Forbidden") -> DeliveryResult:
    return DeliveryResult(
        broadcast_id=broadcast_id,
        user_id=user_id,
        state=DeliveryState.FAILED,
        finished_at=AT,
        error=error,
    )


def blocked(broadcast_id: int, user_id: int) -> DeliveryResult:
    return DeliveryResult(
        broadcast_id=broadcast_id,
        user_id=user_id,
        state=DeliveryState.BLOCKED,
        finished_at=AT,
        error="Forbidden: bot was blocked by the user",
    )


async def block(store: Store, *user_ids: int) -> None:
    """Make users inactive the way production does: a send they blocked."""
    broadcast = await store.create_broadcast(to(*user_ids))
    await store.record_results([blocked(broadcast.id, user_id) for user_id in user_ids])


async def pending(store: Store, broadcast_id: int) -> tuple[int, ...]:
    """The broadcast's ``PENDING`` recipients, ascending."""
    report = await store.delivery_report(
        broadcast_id,
        states=frozenset({DeliveryState.PENDING}),
        after_user_id=None,
        limit=1000,
    )
    return tuple(delivery.user_id for delivery in report)


async def schema_revision(url: str) -> str | None:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            revision: str | None = await connection.scalar(
                text("SELECT version_num FROM alembic_version")
            )
            return revision
    finally:
        await engine.dispose()


# -- schema ---------------------------------------------------------------------------------


async def test_migrate_twice_is_a_no_op(database_url: str) -> None:
    async with Store.open(database_url) as store:
        await store.migrate()
        created = await store.create_broadcast(to(1))
        await store.migrate()
        assert await store.get_broadcast(created.id) == created
    assert await schema_revision(database_url) == HEAD


async def test_a_schema_migrated_by_a_newer_release_is_run_on_not_refused(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A rolling upgrade migrates first; a process of the previous release that restarts
    after that starts on the newer schema (revisions only add), with a warning."""
    async with Store.open(database_url) as store:
        await store.migrate()
        created = await store.create_broadcast(to(1))
        engine = create_engine(database_url)
        try:
            async with engine.begin() as connection:
                await connection.execute(
                    text("UPDATE alembic_version SET version_num = '9999_next'")
                )
        finally:
            await engine.dispose()
        with caplog.at_level(logging.WARNING):
            await store.migrate()
        assert await store.get_broadcast(created.id) == created
    assert "revision 9999_next, which this version does not know" in caplog.text
    assert await schema_revision(database_url) == "9999_next"


async def test_tables_module_matches_the_migrated_schema(database_url: str) -> None:
    async with Store.open(database_url) as store:
        await store.migrate()
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            differences = await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), metadata)
            )
    finally:
        await engine.dispose()
    assert differences == []


async def test_two_stores_migrating_at_once_both_succeed(database_url: str) -> None:
    async with Store.open(database_url) as first, Store.open(database_url) as second:
        await asyncio.gather(first.migrate(), second.migrate())
        created = await first.create_broadcast(to(1, 2))
        assert await second.get_broadcast(created.id) == created
    assert await schema_revision(database_url) == HEAD


async def test_two_processes_migrating_one_new_sqlite_file(tmp_path: Path) -> None:
    database = tmp_path / "not" / "yet" / "there.db"
    url = f"sqlite+aiosqlite:///{database}"
    script = (
        "import asyncio, sys\n"
        "from tgbroadcast.core.store import Store\n"
        "async def main() -> None:\n"
        "    async with Store.open(sys.argv[1]) as store:\n"
        "        await store.migrate()\n"
        "        await store.upsert_users([])\n"
        "asyncio.run(main())\n"
    )
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            url,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outputs = await asyncio.gather(*(process.communicate() for process in processes))
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr.decode()
    assert database.is_file()
    assert await schema_revision(url) == HEAD


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("sqlite+aiosqlite:///:memory:", "SQLite needs a database file"),
        ("sqlite+aiosqlite://", "SQLite needs a database file"),
        ("oracle://nobody@nowhere/db", "unsupported database backend 'oracle'"),
    ],
)
async def test_unusable_urls_are_refused(url: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        async with Store.open(url):
            pass


# -- broadcasts -----------------------------------------------------------------------------


async def test_create_with_user_ids_records_unknown_users(store: Store) -> None:
    await store.upsert_users([UserProfile(id=7, username="seven", first_name="Sev")])
    before = datetime.now(UTC)
    content = Content(message="look", media_type=MediaType.PHOTO, media_url="https://x/y.png")
    recipients = (5, 7, -1001234567890, 2**40)

    created = await store.create_broadcast(NewBroadcast(content=content, user_ids=recipients))

    assert created.status is BroadcastStatus.QUEUED
    assert created.content == content
    assert (created.total, created.sent, created.failed, created.pending) == (4, 0, 0, 4)
    assert created.finished_at is None
    assert before <= created.created_at <= datetime.now(UTC)
    assert await store.get_broadcast(created.id) == created
    assert await store.undispatched_broadcasts() == [created.id]
    assert await pending(store, created.id) == tuple(sorted(recipients))
    users = {user.id: user for user in (await store.list_users(after=None, limit=10)).users}
    assert set(users) == set(recipients)
    for user_id in (5, -1001234567890, 2**40):
        assert users[user_id].active
        assert (users[user_id].username, users[user_id].first_name) == (None, None)
    assert (users[7].username, users[7].first_name) == ("seven", "Sev")


async def test_create_repeats_nothing_when_ids_repeat(store: Store) -> None:
    created = await store.create_broadcast(to(3, 1, 3, 2, 1))
    assert created.total == 3
    assert await pending(store, created.id) == (1, 2, 3)


async def test_create_for_all_users_takes_only_active_ones(store: Store) -> None:
    await store.upsert_users([UserProfile(id=user_id) for user_id in (1, 2, 3, 4)])
    await block(store, 2, 4)

    created = await store.create_broadcast(NewBroadcast(content=HELLO, all_users=True))

    assert (created.status, created.total, created.pending) == (BroadcastStatus.QUEUED, 2, 2)
    assert await store.pending_among(created.id, [1, 2, 3, 4]) == frozenset({1, 3})
    assert await pending(store, created.id) == (1, 3)


async def test_broadcast_without_recipients_is_completed_at_once(store: Store) -> None:
    nobody = await store.create_broadcast(to())
    everybody_of_none = await store.create_broadcast(NewBroadcast(content=HELLO, all_users=True))

    for created in (nobody, everybody_of_none):
        assert created.status is BroadcastStatus.COMPLETED
        assert (created.total, created.pending) == (0, 0)
        assert created.finished_at is not None
        assert created.finished_at >= created.created_at
        assert await pending(store, created.id) == ()
    assert await store.undispatched_broadcasts() == []


async def test_both_audiences_at_once_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="one audience"):
        await store.create_broadcast(NewBroadcast(content=HELLO, user_ids=(1,), all_users=True))


async def test_unknown_broadcast_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match=r"^broadcast 4242 not found$"):
        await store.get_broadcast(4242)


async def test_dispatch_bookkeeping(store: Store) -> None:
    first = await store.create_broadcast(to(1))
    second = await store.create_broadcast(to(2))
    assert second.id > first.id
    assert await store.undispatched_broadcasts() == [first.id, second.id]

    assert await store.mark_generation_dispatched(first.id, None)
    # Idempotent, even where rowcount means "changed".
    assert await store.mark_generation_dispatched(first.id, None)

    assert await store.undispatched_broadcasts() == [second.id]
    await store.record_results([sent(second.id, 2)])  # final: no longer to dispatch
    assert await store.undispatched_broadcasts() == []


# -- deliveries -----------------------------------------------------------------------------


async def test_job_batches_are_cut_the_same_whatever_the_read_size(store: Store) -> None:
    recipients = [5 * i - 40 for i in range(20)]  # negative ids (groups) too
    created = await store.create_broadcast(to(*random.sample(recipients, len(recipients))))
    # Final: all of batch 1 and of the last batch (both left out), one of batch 2 (kept).
    final = [recipients[i] for i in (3, 4, 5, 6, 18, 19)]
    await store.record_results(
        [sent(created.id, u) if u % 2 else failed(created.id, u) for u in final]
    )

    async def jobs(read_size: int) -> list[tuple[int, ...]]:
        cut = store.job_batches(created.id, batch_size=3, read_size=read_size)
        return [batch async for batch in cut]

    expected = [tuple(recipients[k : k + 3]) for k in (0, 6, 9, 12, 15)]
    assert await jobs(7) == expected
    assert await jobs(1000) == expected
    for read_size in (1, 2, 3, 6, 19, 20, 21):
        assert await jobs(read_size) == expected, read_size
    everyone = [batch async for batch in store.job_batches(created.id, batch_size=3)]
    assert everyone == expected  # the default read size
    await store.record_results([sent(created.id, u) for u in recipients if u not in final])
    assert await jobs(7) == []  # every batch final: nothing to queue
    assert [b async for b in store.job_batches(9999, batch_size=3, read_size=7)] == []
    with pytest.raises(ValueError, match="read_size"):
        await jobs(0)


async def test_pending_among_checks_only_the_given_recipients(store: Store) -> None:
    created = await store.create_broadcast(to(*range(1, 1201)))
    await store.record_results([sent(created.id, 2), failed(created.id, 1100)])

    asked = [2, 3, 1100, 1199, 5000, 3]

    assert await store.pending_among(created.id, asked) == frozenset({3, 1199})
    assert await store.pending_among(created.id, list(range(1, 1201))) == frozenset(
        range(1, 1201)
    ) - {2, 1100}
    assert await store.pending_among(created.id, []) == frozenset()


async def test_record_results_counts_each_recipient_once_and_completes(store: Store) -> None:
    created = await store.create_broadcast(to(1, 2, 3))

    first = await store.record_results(
        [sent(created.id, 1, message_id=11), failed(created.id, 2), sent(created.id, 1, 99)]
    )

    assert first.recorded == (sent(created.id, 1, message_id=11), failed(created.id, 2))
    assert (first.finished, first.ordinals) == ((), (1, 2))  # the places among the settled
    running = await store.get_broadcast(created.id)
    assert (running.status, running.sent, running.failed, running.pending) == (
        BroadcastStatus.RUNNING,
        1,
        1,
        1,
    )
    assert running.finished_at is None

    second = await store.record_results(
        [sent(created.id, 2), sent(created.id, 3, message_id=33), sent(created.id, 404)]
    )

    assert (second.recorded, second.ordinals) == ((sent(created.id, 3, message_id=33),), (3,))
    (done,) = second.finished
    assert done == await store.get_broadcast(created.id)
    assert (done.status, done.sent, done.failed, done.pending) == (
        BroadcastStatus.COMPLETED,
        2,
        1,
        0,
    )
    assert done.finished_at is not None
    assert await store.record_results([sent(created.id, 3)]) == Recorded(recorded=(), finished=())
    assert await store.record_results([]) == Recorded(recorded=(), finished=())
    results = await store.list_results(created.id, after_user_id=None, limit=10)
    assert results == [
        sent(created.id, 1, message_id=11),
        failed(created.id, 2),
        sent(created.id, 3, message_id=33),
    ]


async def test_record_results_spans_broadcasts(store: Store) -> None:
    a = await store.create_broadcast(to(1, 2))
    b = await store.create_broadcast(to(1))

    recorded = await store.record_results([sent(b.id, 1), failed(a.id, 2), sent(a.id, 1)])

    assert recorded.recorded == (sent(a.id, 1), failed(a.id, 2), sent(b.id, 1))
    assert [(x.id, x.sent, x.failed, x.status) for x in recorded.finished] == [
        (a.id, 1, 1, BroadcastStatus.COMPLETED),
        (b.id, 1, 0, BroadcastStatus.COMPLETED),
    ]


async def test_record_results_refuses_pending_or_naive_results(store: Store) -> None:
    created = await store.create_broadcast(to(1, 2))
    pending = DeliveryResult(
        broadcast_id=created.id, user_id=1, state=DeliveryState.PENDING, finished_at=AT
    )
    naive = DeliveryResult(
        broadcast_id=created.id,
        user_id=2,
        state=DeliveryState.SENT,
        finished_at=datetime(2025, 1, 1),
    )
    with pytest.raises(ValueError, match="not final"):
        await store.record_results([sent(created.id, 2), pending])
    with pytest.raises(ValueError, match="naive"):
        await store.record_results([sent(created.id, 1), naive])
    assert await store.pending_among(created.id, [1, 2]) == frozenset({1, 2})


async def test_racing_writers_count_each_recipient_once(database_url: str) -> None:
    recipients = list(range(1, 201))
    async with Store.open(database_url) as one, Store.open(database_url) as other:
        await one.migrate()
        created = await one.create_broadcast(to(*recipients))
        shuffled = random.Random(7).sample(recipients, len(recipients))
        attempts = [
            (one, [sent(created.id, u, message_id=1) for u in recipients[:150]]),
            (one, [failed(created.id, u, "two") for u in reversed(recipients[50:])]),
            (other, [sent(created.id, u, message_id=3) for u in shuffled]),
            (other, [failed(created.id, u, "four") for u in recipients if u % 2 == 0]),
        ]

        outcomes = await asyncio.gather(
            *(store.record_results(results) for store, results in attempts)
        )

        recorded = [result for outcome in outcomes for result in outcome.recorded]
        assert sorted(result.user_id for result in recorded) == recipients
        finished = [broadcast for outcome in outcomes for broadcast in outcome.finished]
        assert [(b.id, b.status, b.pending) for b in finished] == [
            (created.id, BroadcastStatus.COMPLETED, 0)
        ]
        final = await other.get_broadcast(created.id)
        assert final == finished[0]
        assert final.sent + final.failed == len(recipients)
        assert final.sent == sum(r.state is DeliveryState.SENT for r in recorded)
        stored = await one.list_results(created.id, after_user_id=None, limit=1000)
        assert stored == sorted(recorded, key=lambda result: result.user_id)


async def test_results_are_final_deliveries_paged_by_user_id(store: Store) -> None:
    created = await store.create_broadcast(to(*range(1, 8)))
    await store.record_results(
        [
            sent(created.id, 7, 70),
            sent(created.id, 1, 10),
            failed(created.id, 6, "🙈 bot was blocked by the user"),
            sent(created.id, 3, 30),
            sent(created.id, 5, 50),
        ]
    )
    all_results = await store.list_results(created.id, after_user_id=None, limit=100)
    assert [r.user_id for r in all_results] == [1, 3, 5, 6, 7]

    pages = []
    after: int | None = None
    while page := await store.list_results(created.id, after_user_id=after, limit=2):
        pages.append([r.user_id for r in page])
        after = page[-1].user_id

    assert pages == [[1, 3], [5, 6], [7]]
    among = await store.results_among(created.id, [7, 2, 3, 3, 100])
    assert among == [sent(created.id, 3, 30), sent(created.id, 7, 70)]
    assert all_results[3] == failed(created.id, 6, "🙈 bot was blocked by the user")
    assert await store.results_among(created.id, []) == []
    with pytest.raises(ValueError, match="limit"):
        await store.list_results(created.id, after_user_id=None, limit=0)


# -- users ----------------------------------------------------------------------------------


async def test_upsert_inserts_updates_given_fields_and_reactivates(store: Store) -> None:
    count = await store.upsert_users(
        [
            UserProfile(id=1, username="ann", first_name="Ann", language_code="en"),
            UserProfile(id=2),
            UserProfile(id=3, first_name="Bo"),
            UserProfile(id=3, last_name="Li"),
        ]
    )
    assert count == 3
    (before,) = (await store.list_users(after=None, limit=1)).users
    await block(store, 1)
    started = datetime.now(UTC)

    assert await store.upsert_users([UserProfile(id=1, last_name="Lee", language_code="de")]) == 1

    ann, two, bo = (await store.list_users(after=None, limit=10)).users
    assert (ann.username, ann.first_name, ann.last_name, ann.language_code) == (
        "ann",
        "Ann",
        "Lee",
        "de",
    )
    assert ann.active
    assert ann.created_at == before.created_at
    assert ann.updated_at >= started
    assert (two.id, two.username, two.first_name, two.active) == (2, None, None, True)
    assert (bo.first_name, bo.last_name) == ("Bo", "Li")
    assert await store.upsert_users([]) == 0


async def test_list_users_pages_by_id(store: Store) -> None:
    await store.upsert_users([UserProfile(id=user_id) for user_id in (10, 3, -5, 2, 1)])

    first = await store.list_users(after=None, limit=2)
    second = await store.list_users(after=first.next_after, limit=2)
    last = await store.list_users(after=second.next_after, limit=2)

    assert ([u.id for u in first.users], first.next_after) == ([-5, 1], 1)
    assert ([u.id for u in second.users], second.next_after) == ([2, 3], 3)
    assert ([u.id for u in last.users], last.next_after) == ([10], None)
    exact = await store.list_users(after=None, limit=5)
    assert (len(exact.users), exact.next_after) == (5, None)
    assert await store.list_users(after=10, limit=5) == type(exact)(users=(), next_after=None)
    with pytest.raises(ValueError, match="limit"):
        await store.list_users(after=None, limit=0)


# -- values ---------------------------------------------------------------------------------


async def test_unicode_and_emoji_round_trip(store: Store) -> None:
    message = "Привет, 世界! 🎉👩‍👩‍👧 " + "😀" * 4000
    content = Content(
        message=message, media_type=MediaType.DOCUMENT, media_url="https://ü.example/😀"
    )
    profile = UserProfile(
        id=1, username="zoë_🚀", first_name="李 😀", last_name="Ñandú", language_code="pt-BR"
    )
    await store.upsert_users([profile])
    created = await store.create_broadcast(NewBroadcast(content=content, user_ids=(1,)))
    await store.record_results([failed(created.id, 1, "🙅 Forbidden: бот заблокирован")])

    assert (await store.get_broadcast(created.id)).content == content
    (user,) = (await store.list_users(after=None, limit=1)).users
    assert (user.username, user.first_name, user.last_name, user.language_code) == (
        "zoë_🚀",
        "李 😀",
        "Ñandú",
        "pt-BR",
    )
    (result,) = await store.results_among(created.id, [1])
    assert result.error == "🙅 Forbidden: бот заблокирован"


@pytest.mark.mariadb
async def test_mysql_connections_use_utf8mb4_unasked(tmp_path: Path) -> None:
    async with temporary_database("mariadb", tmp_path) as url:
        bare = url.split("?", 1)[0]
        assert "charset" not in bare
        async with Store.open(bare) as store:
            await store.migrate()
            await store.upsert_users([UserProfile(id=1, first_name="🦄 Ünï")])
            (user,) = (await store.list_users(after=None, limit=1)).users
    assert user.first_name == "🦄 Ünï"


async def test_timestamps_are_aware_utc_with_microseconds(store: Store) -> None:
    plus_five = timezone(timedelta(hours=5))
    finished_at = datetime(2025, 6, 7, 8, 9, 10, 123456, tzinfo=plus_five)
    created = await store.create_broadcast(to(1))
    await store.record_results(
        [
            DeliveryResult(
                broadcast_id=created.id,
                user_id=1,
                state=DeliveryState.SENT,
                finished_at=finished_at,
                message_id=5,
            )
        ]
    )

    (result,) = await store.results_among(created.id, [1])
    broadcast: Broadcast = await store.get_broadcast(created.id)
    (user,) = (await store.list_users(after=None, limit=1)).users

    assert result.finished_at == finished_at
    assert result.finished_at.tzinfo is UTC
    assert result.finished_at.hour == 3
    assert result.finished_at.microsecond == 123456
    for moment in (broadcast.created_at, broadcast.finished_at, user.created_at, user.updated_at):
        assert moment is not None
        assert moment.tzinfo is UTC
    assert broadcast.created_at == created.created_at
