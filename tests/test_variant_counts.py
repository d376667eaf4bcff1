"""A broadcast's recipients per variant and outcome, kept in ``variant_counts`` as they are
recorded (migration 0019): GetBroadcast's per-variant figures read those rows, not the
deliveries; a broadcast with outcomes recorded before the table, or by an older worker (its
rows no longer add up to ``sent + failed``), is counted from its deliveries; on every
backend."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from alembic import command
from sqlalchemy import delete, update

from tests.fixtures.old_schema import run_migration
from tests.fixtures.statements import executed
from tests.test_store import AT
from tgbroadcast.core.domain.model import (
    Content,
    DeliveryResult,
    DeliveryState,
    NewBroadcast,
    Variant,
)
from tgbroadcast.core.store import Store, counters
from tgbroadcast.core.store.tables import deliveries, variant_counts

BEFORE = "0018"
VARIANTS = (
    Variant(name="a", content=Content(message="Hello")),
    Variant(name="b", content=Content(message="Hi"), weight=2),
)
OUTCOMES = [
    ("a", DeliveryState.SENT),
    ("a", DeliveryState.SENT),
    ("a", DeliveryState.BLOCKED),
    ("b", DeliveryState.SENT),
    ("b", DeliveryState.FAILED),
    ("b", DeliveryState.SENT),
    ("a", DeliveryState.CHAT_NOT_FOUND),
    ("b", DeliveryState.DEACTIVATED),
]
"""Eight recipients' variants and outcomes."""
EXPECTED = {
    "a": {DeliveryState.SENT: 2, DeliveryState.BLOCKED: 1, DeliveryState.CHAT_NOT_FOUND: 1},
    "b": {DeliveryState.SENT: 2, DeliveryState.FAILED: 1, DeliveryState.DEACTIVATED: 1},
}


def with_variants(*user_ids: int) -> NewBroadcast:
    return NewBroadcast(content=VARIANTS[0].content, user_ids=user_ids, variants=VARIANTS)


def outcome(
    broadcast_id: int, user_id: int, variant: str | None, state: DeliveryState
) -> DeliveryResult:
    result = DeliveryResult(
        broadcast_id=broadcast_id, user_id=user_id, state=state, finished_at=AT, variant=variant
    )
    if state.delivered:
        return replace(result, message_id=user_id)
    return replace(result, error=f"refused: {state.value}")


def on_deliveries(statement: str) -> bool:
    return "deliveries" in statement


async def record_all(stores: list[Store], broadcast_id: int, first: int = 1) -> None:
    """:data:`OUTCOMES` for recipients ``first``, ``first + 1``, ..., in four commits at once
    from ``stores`` in turn (two recorded twice: counted once)."""
    results = [outcome(broadcast_id, first + i, *o) for i, o in enumerate(OUTCOMES)]
    parts = [results[:3], results[2:5], results[5:7], results[6:]]
    await asyncio.gather(
        *(stores[i % len(stores)].record_results(part) for i, part in enumerate(parts))
    )


async def test_outcomes_are_counted_per_variant_as_they_are_recorded(
    store: Store, database_url: str
) -> None:
    created = await store.create_broadcast(with_variants(*range(1, 10)))  # one left pending
    assert await store.variant_counts(created.id) == {}
    async with Store.open(database_url) as other:
        await record_all([store, other], created.id)
    with executed(on_deliveries) as read:
        counts = await store.variant_counts(created.id)
    assert counts == EXPECTED
    assert read == []  # the kept counts alone
    plain = await store.create_broadcast(NewBroadcast(content=Content(message="x"), user_ids=(1,)))
    await store.record_results([outcome(plain.id, 1, None, DeliveryState.SENT)])
    async with store._engine.connect() as connection:  # nothing kept without variants
        kept = (
            await connection.execute(
                variant_counts.select().where(variant_counts.c.broadcast_id == plain.id)
            )
        ).all()
    assert kept == []


async def test_a_broadcast_recorded_before_the_table_counts_its_deliveries(store: Store) -> None:
    created = await store.create_broadcast(with_variants(*range(1, 9)))
    await record_all([store], created.id)
    async with store._engine.begin() as connection:  # as if recorded before the table
        await connection.execute(
            delete(variant_counts).where(variant_counts.c.broadcast_id == created.id)
        )
    with executed(on_deliveries) as read:
        assert await store.variant_counts(created.id) == EXPECTED
    assert read != []


async def test_outcomes_recorded_by_an_older_worker_are_counted_from_the_deliveries(
    store: Store,
) -> None:
    """A worker of the previous release (during a rollout) counts ``sent`` but keeps no
    variant counts: they no longer add up, and the deliveries say what they are."""
    created = await store.create_broadcast(with_variants(*range(1, 10)))
    await record_all([store], created.id)
    async with store._engine.begin() as connection:  # recipient 9 sent with "a", as it records
        await connection.execute(
            update(deliveries)
            .where(deliveries.c.broadcast_id == created.id, deliveries.c.user_id == 9)
            .values(state=DeliveryState.SENT.value, variant="a", message_id=9)
        )
        await counters.count(connection, created.id, 1, 0, 1, 0, now=AT)
    with executed(on_deliveries) as read:
        counts = await store.variant_counts(created.id)
    assert counts == {**EXPECTED, "a": {**EXPECTED["a"], DeliveryState.SENT: 3}}
    assert read != []


async def test_the_migration_adds_the_table_and_its_downgrade_drops_it(database_url: str) -> None:
    async with Store.open(database_url) as store:
        await store.migrate()
        old = await store.create_broadcast(with_variants(*range(1, 9)))
        await record_all([store], old.id)
    await run_migration(database_url, command.downgrade, BEFORE)
    await run_migration(database_url, command.upgrade, "head")
    async with Store.open(database_url) as store:
        assert await store.variant_counts(old.id) == EXPECTED  # from its deliveries
        new = await store.create_broadcast(with_variants(*range(100, 108)))
        await record_all([store], new.id, first=100)
        with executed(on_deliveries) as read:
            assert await store.variant_counts(new.id) == EXPECTED
        assert read == []
