"""``ix_deliveries_state`` (migration 0017): on PostgreSQL and SQLite it holds only settled
recipients (``state <> 'pending'``), MariaDB keeps the whole one — while the queries of either
side answer the same, SQLite reads the settled side through the index and the pending side by
the primary key, and a downgrade restores the index as it was."""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from sqlalchemy.engine import make_url

from tests.fixtures.databases import temporary_database
from tests.fixtures.old_schema import indexes, predicate, run_migration
from tests.fixtures.statements import executed
from tests.test_store import blocked, sent, to
from tgbroadcast.core.domain.model import DeliveryState
from tgbroadcast.core.store import Store

BEFORE = "0016"
ERROR = "Forbidden: bot was blocked by the user"
"""What :func:`tests.test_store.blocked` records."""


async def state_index(url: str) -> dict[str, Any]:
    return (await indexes(url, "deliveries"))["ix_deliveries_state"]


def normalized(where: str | None) -> str:
    """PostgreSQL's ``((state)::text <> 'pending'::text)`` as SQLite keeps it."""
    return (where or "").replace("(", "").replace(")", "").replace("::text", "")


async def test_only_settled_recipients_are_indexed(database_url: str) -> None:
    async with Store.open(database_url) as store:
        await store.migrate()
        created = await store.create_broadcast(to(1, 2, 3, 4))
        await store.record_results([sent(created.id, 2), blocked(created.id, 4)])
        assert await store.outcome_counts(created.id) == {
            DeliveryState.SENT: 1,
            DeliveryState.BLOCKED: 1,
        }
        assert await store.count_errors(created.id, DeliveryState.BLOCKED, ERROR) == 1

        async def report(*states: DeliveryState, after: int | None = None) -> list[int]:
            page = await store.delivery_report(
                created.id, states=frozenset(states), after_user_id=after, limit=10
            )
            return [d.user_id for d in page]

        assert await report(DeliveryState.BLOCKED) == [4]
        assert await report(DeliveryState.SENT, DeliveryState.BLOCKED) == [2, 4]
        assert await report(DeliveryState.PENDING) == [1, 3]
        assert await report(DeliveryState.PENDING, DeliveryState.BLOCKED, after=1) == [3, 4]
        assert await report() == [1, 2, 3, 4]
        results = await store.list_results(created.id, after_user_id=None, limit=10)
        assert [r.user_id for r in results] == [2, 4]

    index = await state_index(database_url)
    assert index["column_names"] == ["broadcast_id", "state", "user_id"]
    if database_url.startswith(("postgresql", "sqlite")):
        assert normalized(predicate(index)) == "state <> 'pending'"
    else:
        assert predicate(index) is None


async def test_the_downgrade_restores_the_whole_index(database_url: str) -> None:
    async with Store.open(database_url) as store:
        await store.migrate()
        created = await store.create_broadcast(to(1, 2))
        await store.record_results([blocked(created.id, 2)])
    await run_migration(database_url, command.downgrade, BEFORE)
    assert predicate(await state_index(database_url)) is None
    await run_migration(database_url, command.upgrade, "head")
    if database_url.startswith(("postgresql", "sqlite")):
        assert predicate(await state_index(database_url)) is not None
    async with Store.open(database_url) as store:
        assert await store.outcome_counts(created.id) == {DeliveryState.BLOCKED: 1}


def statements() -> AbstractContextManager[list[tuple[str, Any]]]:
    """Every statement on ``deliveries`` run meanwhile, with its parameters."""
    return executed(lambda statement: "deliveries" in statement)


async def test_sqlite_reads_each_side_through_its_own_index(tmp_path: Path) -> None:
    """The settled side's queries (counts, a report of outcomes, an edit's search for
    recipients of older content) through the partial index; a claim of pending recipients
    by their ids through the primary key; none reads the broadcast's rows whole."""
    async with (
        temporary_database("sqlite", tmp_path, migrated=True) as url,
        Store.open(url) as store,
    ):
        created = await store.create_broadcast(to(*range(1, 301)))
        await store.record_results([sent(created.id, 1), blocked(created.id, 2)])
        with statements() as counted:
            await store.outcome_counts(created.id)
            await store.count_errors(created.id, DeliveryState.BLOCKED, ERROR)
        with statements() as reported:
            await store.delivery_report(
                created.id,
                states=frozenset({DeliveryState.BLOCKED}),
                after_user_id=None,
                limit=10,
            )
        with statements() as claimed:
            await store.claim_recipients(
                created.id, list(range(10, 110)), token="t", lease_seconds=30
            )
        with statements() as finished:
            await store.finish_edit(created.id, version=2, now=datetime.now(UTC))
    path = make_url(url).database
    assert path is not None
    with sqlite3.connect(path) as connection:

        def plans(run: list[tuple[str, Any]]) -> list[str]:
            assert run
            return [
                row[-1]
                for statement, parameters in run
                for row in connection.execute(f"EXPLAIN QUERY PLAN {statement}", parameters)
            ]

        settled = plans(counted) + plans(reported)
        edit = plans(finished)
        claims = plans(claimed)
    for plan in (settled, edit, claims):
        assert not any(line.startswith("SCAN deliveries") for line in plan), plan
    searches = [line for line in settled if "deliveries" in line]
    assert searches, settled
    assert all("ix_deliveries_state" in line for line in searches), settled
    # The edit's search for recipients of older content (its search for sends in flight is
    # the pending side's, left out while every recipient is counted).
    assert any("ix_deliveries_state (broadcast_id=? AND state=?)" in line for line in edit), edit
    searches = [line for line in claims if "deliveries" in line]
    assert searches, claims
    assert all("user_id=?" in line for line in searches), claims
    assert not any("ix_deliveries_state" in line for line in claims), claims
