"""A recall's statements on every backend: its batches, one holder per sent recipient at a
time, the first outcome recorded and counted once, and the move to ``recalled`` only when
nobody is left (no sent recipient without an outcome, no send in flight)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from tgbroadcast.core.domain.model import (
    BroadcastStatus,
    Content,
    DeliveryResult,
    DeliveryState,
    NewBroadcast,
    RecallOutcome,
)
from tgbroadcast.core.domain.states import Command
from tgbroadcast.core.store import RecallResult, Store

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def sent(broadcast_id: int, user_id: int, *ids: int) -> DeliveryResult:
    return DeliveryResult(
        broadcast_id=broadcast_id,
        user_id=user_id,
        state=DeliveryState.SENT,
        finished_at=AT,
        message_id=ids[0],
        message_ids=ids if len(ids) > 1 else (),
    )


def recalled(broadcast_id: int, user_id: int, outcome: RecallOutcome) -> RecallResult:
    return RecallResult(broadcast_id=broadcast_id, user_id=user_id, outcome=outcome, at=AT)


async def test_a_recall_holds_records_and_finishes_once(store: Store) -> None:
    created = await store.create_broadcast(
        NewBroadcast(content=Content(message="x"), user_ids=tuple(range(1, 8)))
    )
    bid = created.id
    await store.record_results(
        [
            sent(bid, 1, 10),
            sent(bid, 2, 20, 21, 22),
            sent(bid, 3, 30),
            DeliveryResult(
                broadcast_id=bid,
                user_id=4,
                state=DeliveryState.BLOCKED,
                finished_at=AT,
                error="Forbidden: bot was blocked by the user",
            ),
        ]
    )
    # 5 has a send in flight (a live claim); 6 and 7 were never attempted.
    in_flight = await store.claim_recipients(bid, [5], token="sender", lease_seconds=60)
    assert in_flight.held == {5}
    await store.move_broadcast(bid, Command.RECALL)
    now = datetime.now(UTC)
    until = now + timedelta(seconds=60)

    batches = [b async for b in store.recall_batches(bid, batch_size=3, now=now)]
    assert batches == [(1, 2, 3), (4, 5, 6)]  # 7's batch has nobody to recall

    first, second = await asyncio.gather(
        store.claim_recall(bid, [1, 2, 3, 4, 5], token="a", now=now, until=until),
        store.claim_recall(bid, [1, 2, 3, 4, 5], token="b", now=now, until=until),
    )
    holder, other = (first, second) if first.held else (second, first)
    assert [t.user_id for t in holder.held] == [1, 2, 3]
    assert [t.message_ids for t in holder.held] == [(10,), (20, 21, 22), (30,)]
    assert holder.held[0].sent_at == AT
    assert holder.busy == 1  # the send in flight
    assert (other.held, other.busy) == ((), 4)

    results = [recalled(bid, 1, RecallOutcome.DELETED), recalled(bid, 2, RecallOutcome.TOO_OLD)]
    assert await store.record_recalls(results) == {1: 1, 2: 2}  # numbered
    again = [recalled(bid, 2, RecallOutcome.NOT_FOUND), recalled(bid, 1, RecallOutcome.NOT_FOUND)]
    assert await store.record_recalls(again) == {}  # the first outcome stays
    assert await store.finish_recall(bid, now=datetime.now(UTC)) is None  # 3 and 5 left
    # Written together: only those without an outcome, each recipient's first in the batch.
    batch = [
        recalled(bid, 3, RecallOutcome.DELETED),
        recalled(bid, 3, RecallOutcome.FAILED),
        recalled(bid, 1, RecallOutcome.FAILED),
    ]
    assert await store.record_recalls(batch) == {3: 3}
    assert await store.recall_counts(bid) == {RecallOutcome.DELETED: 2, RecallOutcome.TOO_OLD: 1}
    assert await store.finish_recall(bid, now=datetime.now(UTC)) is None  # 5 in flight

    # The send finishes and is recorded: now it is to be recalled too.
    await store.record_results([sent(bid, 5, 50)])
    claim = await store.claim_recall(bid, [4, 5, 6], token="a", now=now, until=until)
    assert ([t.user_id for t in claim.held], claim.busy) == ([5], 0)
    assert await store.record_recalls([recalled(bid, 5, RecallOutcome.DELETED)]) == {5: 4}
    finished = await store.finish_recall(bid, now=datetime.now(UTC))
    assert finished is not None
    assert finished.status is BroadcastStatus.RECALLED
    # Recalled while it was still sending: final now, and when is its finish.
    assert created.finished_at is None
    assert finished.finished_at is not None
    assert finished.finished_at >= now
    assert finished.recalled == 4
    assert await store.finish_recall(bid, now=datetime.now(UTC)) is None  # once
    assert await store.recall_counts(bid) == {
        RecallOutcome.DELETED: 3,
        RecallOutcome.TOO_OLD: 1,
    }
    report = await store.delivery_report(bid, after_user_id=None, limit=10)
    assert {d.user_id: d.recall for d in report} == {
        1: RecallOutcome.DELETED,
        2: RecallOutcome.TOO_OLD,
        3: RecallOutcome.DELETED,
        4: None,
        5: RecallOutcome.DELETED,
        6: None,
        7: None,
    }
    assert [d.state for d in report if d.user_id in (6, 7)] == [DeliveryState.PENDING] * 2


async def test_a_lapsed_hold_is_taken_over(store: Store) -> None:
    created = await store.create_broadcast(
        NewBroadcast(content=Content(message="x"), user_ids=(1,))
    )
    await store.record_results([sent(created.id, 1, 10)])
    await store.move_broadcast(created.id, Command.RECALL)
    now = datetime.now(UTC)
    dead = await store.claim_recall(
        created.id, [1], token="dead", now=now, until=now + timedelta(seconds=1)
    )
    assert len(dead.held) == 1
    later = now + timedelta(seconds=2)  # the dead worker's claim has lapsed
    taken = await store.claim_recall(
        created.id, [1], token="alive", now=later, until=later + timedelta(seconds=60)
    )
    assert ([t.user_id for t in taken.held], taken.busy) == ([1], 0)
