"""Recording outcomes: what a result carries survives the write on every backend, a batch
spanning several statements counts each recipient once, and the one-statement writes of
SQLite and PostgreSQL search the recipients they are given (never a scan of the broadcast's).

``store`` and ``database_url`` come from ``tests/fixtures/databases.py``.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from tests.fixtures.databases import temporary_database
from tests.test_store import AT, sent, to
from tgbroadcast.core.domain.model import (
    BroadcastStatus,
    DeliveryResult,
    DeliveryState,
)
from tgbroadcast.core.store import Store
from tgbroadcast.core.store.finals import POSTGRES_FINALIZE, SQLITE_FINALIZE
from tgbroadcast.core.store.limits import IDS_PER_IN_LIST

INT64_MAX = 2**63 - 1
GROUP = -1001234567890


async def test_every_field_of_a_result_survives_recording(store: Store) -> None:
    created = await store.create_broadcast(to(1, 2, 3, INT64_MAX, GROUP))
    plus_three = timezone(timedelta(hours=3))
    results = [
        DeliveryResult(
            broadcast_id=created.id,
            user_id=GROUP,
            state=DeliveryState.SENT,
            finished_at=AT,
            message_id=INT64_MAX,
            message_ids=(INT64_MAX, 7, 8),
            content_version=3,
            variant='b "quoted" ✓',
        ),
        DeliveryResult(
            broadcast_id=created.id,
            user_id=1,
            state=DeliveryState.FAILED,
            # another zone, and no microseconds: read back as the same instant in UTC
            finished_at=datetime(2025, 1, 2, 6, 4, 5, tzinfo=plus_three),
            error='Bad Request: can\'t parse "entities"\n\\ at byte 7 — ✗',
        ),
        DeliveryResult(
            broadcast_id=created.id,
            user_id=2,
            state=DeliveryState.BLOCKED,
            finished_at=AT,
            error="Forbidden: bot was blocked by the user",
        ),
        DeliveryResult(
            broadcast_id=created.id,
            user_id=INT64_MAX,
            state=DeliveryState.SENT,
            finished_at=AT + timedelta(microseconds=1),
            message_id=5,
        ),
    ]

    recorded = await store.record_results(results)

    in_order = sorted(results, key=lambda result: result.user_id)
    assert recorded.recorded == tuple(in_order)
    assert recorded.finished == ()
    read = await store.list_results(created.id, after_user_id=None, limit=10)
    expected = [r if r.finished_at.utcoffset() == timedelta(0) else _in_utc(r) for r in in_order]
    assert read == expected
    assert read[1].finished_at == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert await store.pending_among(created.id, [1, 2, 3, INT64_MAX, GROUP]) == {3}
    progress = await store.get_broadcast(created.id)
    assert (progress.status, progress.sent, progress.failed) == (BroadcastStatus.RUNNING, 2, 2)


async def test_a_batch_over_several_statements_counts_each_recipient_once(store: Store) -> None:
    count = IDS_PER_IN_LIST * 2 + 7
    created = await store.create_broadcast(to(*range(1, count + 1)))
    half = [sent(created.id, user_id) for user_id in range(2, count + 1, 2)]
    assert len((await store.record_results(half)).recorded) == count // 2

    # every recipient, the even ones a second time (with another message id), and a stranger
    everyone = [sent(created.id, user_id, 2) for user_id in range(1, count + 2)]
    again = await store.record_results(everyone)

    assert [r.user_id for r in again.recorded] == list(range(1, count + 1, 2))
    (finished,) = again.finished
    assert (finished.status, finished.sent, finished.failed) == (
        BroadcastStatus.COMPLETED,
        count,
        0,
    )
    assert finished.finished_at is not None
    read = await store.list_results(created.id, after_user_id=None, limit=count)
    assert [r.message_id for r in read] == [2 if u % 2 else 1 for u in range(1, count + 1)]
    # completed once: a later result neither counts nor finishes it again
    late = await store.record_results([sent(created.id, 1, 3)])
    assert (late.recorded, late.finished) == ((), ())
    assert (await store.get_broadcast(created.id)).finished_at == finished.finished_at


async def test_sqlite_writes_results_by_searching_their_recipients(tmp_path: Path) -> None:
    """The plan with and without the planner's statistics: a search of the given ids."""
    async with (
        temporary_database("sqlite", tmp_path, migrated=True) as url,
        Store.open(url) as store,
    ):
        created = await store.create_broadcast(to(*range(1, 3001)))
    path = make_url(url).database
    assert path is not None
    compiled = SQLITE_FINALIZE.compile(dialect=sqlite.dialect())
    rows = f'[[5,"sent",1,null,null,"{AT:%Y-%m-%d %H:%M:%S.%f}",null,null]]'
    values = {"rows": rows, "broadcast_id": created.id, "pending": "pending"}
    assert compiled.positiontup is not None
    parameters = [values[name] for name in compiled.positiontup]
    with sqlite3.connect(path) as connection:
        for analyzed in (False, True):
            if analyzed:
                connection.execute("ANALYZE")
            plan = connection.execute(f"EXPLAIN QUERY PLAN {compiled}", parameters).fetchall()
            details = [row[-1] for row in plan]
            assert any(d.startswith("SEARCH deliveries") for d in details), details
            assert not any(d.startswith("SCAN deliveries") for d in details), details


@pytest.mark.postgres
async def test_postgres_writes_results_by_searching_their_recipients(tmp_path: Path) -> None:
    """With the statistics the store keeps (it analyzes after a big broadcast), in a custom
    and a generic plan: an index search of the given ids, not a scan of the broadcast."""
    async with (
        temporary_database("postgres", tmp_path, migrated=True) as url,
        Store.open(url) as store,
    ):
        created = await store.create_broadcast(to(*range(1, 3001)))
        engine = create_async_engine(url)
        compiled = POSTGRES_FINALIZE.compile(dialect=engine.dialect)
        ids = list(range(1000, 1014))
        values = {
            "user_ids": ids,
            "states": ["sent"] * len(ids),
            "message_ids": ids,
            "message_id_lists": [None] * len(ids),
            "errors": [None] * len(ids),
            "finished": [AT] * len(ids),
            "versions": [None] * len(ids),
            "variants": [None] * len(ids),
            "broadcast_id": created.id,
            "pending": "pending",
        }
        assert compiled.positiontup is not None
        arguments = tuple(values[name] for name in compiled.positiontup)
        try:
            async with engine.connect() as connection:
                await connection.exec_driver_sql("ANALYZE deliveries")
                for mode in ("force_custom_plan", "force_generic_plan"):
                    await connection.exec_driver_sql(f"SET plan_cache_mode = {mode}")
                    explained = await connection.exec_driver_sql(
                        f"EXPLAIN (FORMAT JSON) {compiled}", arguments
                    )
                    (plan,) = explained.scalar_one()
                    scans = [
                        node
                        for node in _nodes(plan["Plan"])
                        if node.get("Relation Name") == "deliveries" and "Scan" in node["Node Type"]
                    ]
                    assert scans, plan
                    for scan in scans:
                        assert scan["Node Type"] in ("Index Scan", "Index Only Scan"), (mode, plan)
                        assert "user_id" in scan["Index Cond"], (mode, plan)
        finally:
            await engine.dispose()


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from _nodes(child)


def _in_utc(result: DeliveryResult) -> DeliveryResult:
    return dataclasses.replace(result, finished_at=result.finished_at.astimezone(UTC))
