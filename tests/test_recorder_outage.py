"""The recorder during a NATS outage: its SQL commits go on while the events' publishing is
retried, so the outcomes in hand when the worker stops are recorded (a redelivered job sends
them nothing again); normally a commit waits for the last one's events (its batch is what
arrived meanwhile)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from tgbroadcast.core.domain.model import DeliveryResult, DeliveryState
from tgbroadcast.core.metrics import Metrics
from tgbroadcast.core.queue import Event, Queue, ResultEvent
from tgbroadcast.core.store import Recorded, Store
from tgbroadcast.worker.recorder import ResultRecorder

NOW = datetime(2026, 12, 8, tzinfo=UTC)


def outcome(user_id: int) -> DeliveryResult:
    return DeliveryResult(
        broadcast_id=1, user_id=user_id, state=DeliveryState.SENT, finished_at=NOW
    )


class Sql:
    """Commits every batch at once; each commit's user ids, in order."""

    def __init__(self) -> None:
        self.commits: list[list[int]] = []
        self.committed = asyncio.Event()

    async def record_results(self, results: Sequence[DeliveryResult]) -> Recorded:
        self.commits.append([r.user_id for r in results])
        self.committed.set()
        return Recorded(
            recorded=tuple(results), finished=(), ordinals=tuple(range(1, len(results) + 1))
        )


class Nats:
    """Refuses every publish until ``up`` (each failure counted), then acknowledges them."""

    def __init__(self) -> None:
        self.up = False
        self.failures = 0
        self.failed = asyncio.Event()
        self.published: list[list[Event]] = []
        self.held = asyncio.Event()
        self.held.set()

    async def publish_events(self, events: Sequence[Event]) -> None:
        await self.held.wait()
        if not self.up:
            self.failures += 1
            self.failed.set()
            raise ConnectionError("nats is down")
        self.published.append(list(events))

    async def notify(self, *changes: Any) -> None:
        pass


def recorder(sql: Sql, nats: Nats) -> ResultRecorder:
    return ResultRecorder(
        store=cast(Store, sql),
        queue=cast(Queue, nats),
        metrics=Metrics(),
        retry_delay=0.001,
        max_retry_delay=0.002,
    )


async def test_outcomes_are_committed_while_their_events_cannot_be_published() -> None:
    sql, nats = Sql(), Nats()
    async with recorder(sql, nats) as recording:
        first = asyncio.create_task(recording.record(outcome(1)))
        await nats.failed.wait()  # NATS is down: the first commit's events are retried
        sql.committed.clear()
        later = [asyncio.create_task(recording.record(outcome(u))) for u in (2, 3)]
        await sql.committed.wait()
        while sum(len(c) for c in sql.commits) < 3:
            sql.committed.clear()
            await sql.committed.wait()
        assert not first.done()  # its event is not published: its caller waits
        assert not any(task.done() for task in later)
    # Stopped before NATS came back: every outcome is in SQL, none returned as recorded.
    assert sorted(u for c in sql.commits for u in c) == [1, 2, 3]
    for task in (first, *later):
        with pytest.raises(RuntimeError, match="recorder stopped"):
            await task


async def test_outcomes_arriving_while_events_are_published_make_one_batch() -> None:
    """One a turn of the loop (as sends finish): the next commit takes them all, not the first
    alone."""
    sql, nats = Sql(), Nats()
    nats.up = True
    nats.held.clear()
    async with recorder(sql, nats) as recording:
        calls = [asyncio.create_task(recording.record(outcome(1)))]
        await sql.committed.wait()
        for user_id in range(2, 8):
            calls.append(asyncio.create_task(recording.record(outcome(user_id))))
            await asyncio.sleep(0)
        nats.held.set()
        await asyncio.gather(*calls)
    assert sql.commits == [[1], [2, 3, 4, 5, 6, 7]]


async def test_a_commit_waits_for_the_last_ones_events() -> None:
    sql, nats = Sql(), Nats()
    nats.up = True
    nats.held.clear()  # the first commit's events in flight
    async with recorder(sql, nats) as recording:
        first = asyncio.create_task(recording.record(outcome(1)))
        await sql.committed.wait()
        sql.committed.clear()
        later = [asyncio.create_task(recording.record(outcome(u))) for u in (2, 3)]
        for _ in range(20):  # turns of the loop: nothing is committed meanwhile
            await asyncio.sleep(0)
        assert sql.commits == [[1]]
        nats.held.set()
        await asyncio.gather(first, *later)
    assert sql.commits == [[1], [2, 3]]  # what arrived meanwhile, in one commit
    published = [[cast(ResultEvent, e).result.user_id for e in p] for p in nats.published]
    assert published == [[1], [2, 3]]
