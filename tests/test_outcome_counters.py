"""A broadcast's recipients per outcome, counted on its row as they are recorded (migration
0018): GetBroadcast's ``outcome_counts`` read the row, not the deliveries; a broadcast from
before the counters (their columns NULL), or with outcomes an older worker recorded (they do
not add up to ``failed``), is counted from its deliveries; on every backend."""

from __future__ import annotations

from dataclasses import replace

from alembic import command
from sqlalchemy import text, update

from tests.fixtures.old_schema import run_migration
from tests.fixtures.statements import executed
from tests.test_store import AT, to
from tgbroadcast.core.domain.model import DeliveryResult, DeliveryState
from tgbroadcast.core.store import Store, counters
from tgbroadcast.core.store.tables import COUNTED_OUTCOMES, broadcasts, count_column, deliveries

BEFORE = "0017"
OUTCOMES = [
    DeliveryState.SENT,
    DeliveryState.SENT,
    DeliveryState.SENT,
    DeliveryState.BLOCKED,
    DeliveryState.BLOCKED,
    DeliveryState.DEACTIVATED,
    DeliveryState.CANT_INITIATE,
    DeliveryState.KICKED,
    DeliveryState.CHAT_NOT_FOUND,
    DeliveryState.BAD_REQUEST,
    DeliveryState.FAILED,
    DeliveryState.FAILED,
]
"""Twelve recipients' outcomes, every final state among them."""
EXPECTED = {
    DeliveryState.SENT: 3,
    DeliveryState.BLOCKED: 2,
    DeliveryState.DEACTIVATED: 1,
    DeliveryState.CANT_INITIATE: 1,
    DeliveryState.KICKED: 1,
    DeliveryState.CHAT_NOT_FOUND: 1,
    DeliveryState.BAD_REQUEST: 1,
    DeliveryState.FAILED: 2,
}


def outcome(broadcast_id: int, user_id: int, state: DeliveryState) -> DeliveryResult:
    result = DeliveryResult(broadcast_id=broadcast_id, user_id=user_id, state=state, finished_at=AT)
    if state.delivered:
        return replace(result, message_id=user_id)
    return replace(result, error=f"refused: {state.value}")


def on_deliveries(statement: str) -> bool:
    return "deliveries" in statement


async def record_all(store: Store, broadcast_id: int, first: int = 1) -> None:
    """:data:`OUTCOMES` for recipients ``first``, ``first + 1``, ..., in three commits (one
    recorded twice: counted once)."""
    results = [outcome(broadcast_id, first + i, s) for i, s in enumerate(OUTCOMES)]
    await store.record_results(results[:5])
    await store.record_results(results[3:9])
    await store.record_results(results[9:])


async def test_outcomes_are_counted_on_the_row(store: Store) -> None:
    created = await store.create_broadcast(to(*range(1, 14)))  # one left pending
    assert await store.outcome_counts(created.id) == {}
    await record_all(store, created.id)
    with executed(on_deliveries) as read:
        counts = await store.outcome_counts(created.id)
    assert counts == EXPECTED
    assert read == []  # the broadcast's row alone
    again = await store.get_broadcast(created.id)
    assert (again.sent, again.failed) == (3, 9)


async def test_a_broadcast_from_before_the_counters_counts_its_deliveries(store: Store) -> None:
    created = await store.create_broadcast(to(*range(1, 13)))
    nulls = {count_column(o): None for o in COUNTED_OUTCOMES}
    async with store._engine.begin() as connection:
        await connection.execute(
            update(broadcasts).where(broadcasts.c.id == created.id).values(**nulls)
        )
    await record_all(store, created.id)
    with executed(on_deliveries) as read:
        assert await store.outcome_counts(created.id) == EXPECTED
    assert read != []
    async with store._engine.connect() as connection:
        row = (
            await connection.execute(
                text("SELECT count_blocked FROM broadcasts WHERE id = :id"), {"id": created.id}
            )
        ).one()
    assert row.count_blocked is None  # recording adds nothing to a NULL


async def test_the_migration_adds_the_counters_and_its_downgrade_drops_them(
    database_url: str,
) -> None:
    async with Store.open(database_url) as store:
        await store.migrate()
        old = await store.create_broadcast(to(*range(1, 13)))
    await run_migration(database_url, command.downgrade, BEFORE)
    await run_migration(database_url, command.upgrade, "head")
    async with Store.open(database_url) as store:
        await record_all(store, old.id)  # its counters dropped and added again: NULL
        assert await store.outcome_counts(old.id) == EXPECTED
        new = await store.create_broadcast(to(*range(100, 112)))
        await record_all(store, new.id, first=100)
        with executed(on_deliveries) as read:
            assert await store.outcome_counts(new.id) == EXPECTED
        assert read == []


async def test_outcomes_recorded_by_an_older_worker_are_counted_from_the_deliveries(
    store: Store,
) -> None:
    """A worker of the previous release (during a rollout) counts ``failed`` but not the
    outcome: the counts no longer add up, and the deliveries say what they are."""
    created = await store.create_broadcast(to(*range(1, 14)))
    await record_all(store, created.id)
    async with store._engine.begin() as connection:  # recipient 13 blocked, as it records
        await connection.execute(
            update(deliveries)
            .where(deliveries.c.broadcast_id == created.id, deliveries.c.user_id == 13)
            .values(state=DeliveryState.BLOCKED.value, error="Forbidden")
        )
        await counters.count(connection, created.id, 0, 1, counters.NO_SEND, 0, now=AT)
    with executed(on_deliveries) as read:
        counts = await store.outcome_counts(created.id)
    assert counts == {**EXPECTED, DeliveryState.BLOCKED: 3}
    assert read != []
