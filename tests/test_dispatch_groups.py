"""Many small broadcasts dispatched at once: the store's reads and writes for a group (on
every backend), and the dispatcher publishing a group with one read, one publish and one
write, leaving the others, and a group that fails, to the one-by-one dispatch."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest

from tests.fixtures.nats import drain_jobs
from tgbroadcast.core.domain import states
from tgbroadcast.core.domain.errors import QueueError
from tgbroadcast.core.domain.model import (
    Broadcast,
    BroadcastStatus,
    Content,
    DeliveryResult,
    DeliveryState,
    NewBroadcast,
)
from tgbroadcast.core.domain.states import Command
from tgbroadcast.core.queue import Job, Queue
from tgbroadcast.core.service.dispatch import Dispatcher
from tgbroadcast.core.store import SmallBroadcast, Store

FUTURE = datetime(2999, 1, 1, tzinfo=UTC)


def to(*user_ids: int, send_at: datetime | None = None) -> NewBroadcast:
    return NewBroadcast(content=Content(message="hi"), user_ids=user_ids, send_at=send_at)


def sent(broadcast_id: int, user_id: int) -> DeliveryResult:
    return DeliveryResult(
        broadcast_id=broadcast_id,
        user_id=user_id,
        state=DeliveryState.SENT,
        finished_at=datetime.now(UTC),
        message_id=1,
    )


def sendable(broadcast: Broadcast) -> bool:
    return broadcast.status in states.SENDABLE


async def test_small_broadcasts_are_read_with_their_recipients(store: Store) -> None:
    queued = await store.create_broadcast(to(30, 10, 20))
    running = await store.create_broadcast(to(5, 6))
    await store.record_results([sent(running.id, 5)])
    big = await store.create_broadcast(to(*range(1, 102)))
    scheduled = await store.create_broadcast(to(1, send_at=FUTURE))
    done = await store.create_broadcast(to(7))
    await store.record_results([sent(done.id, 7)])

    ids = [running.id, queued.id, big.id, scheduled.id, 10**12, done.id, queued.id]
    small = await store.small_broadcasts(ids, max_recipients=100, eligible=sendable)
    # Those that exist, are eligible and fit, once each, in the order asked.
    assert [(s.broadcast.id, s.recipients, s.pending) for s in small] == [
        (running.id, (5, 6), True),
        (queued.id, (10, 20, 30), True),
    ]
    assert small[0].broadcast.status is BroadcastStatus.RUNNING

    (finished,) = await store.small_broadcasts([done.id], max_recipients=1, eligible=bool)
    assert (finished.recipients, finished.pending) == ((7,), False)
    assert await store.small_broadcasts([big.id], max_recipients=101, eligible=bool) != []
    assert await store.small_broadcasts([], max_recipients=100, eligible=bool) == []


async def test_generations_are_marked_dispatched_in_one_transaction(store: Store) -> None:
    first = await store.create_broadcast(to(1))
    resumed = await store.create_broadcast(to(2))
    await store.move_broadcast(resumed.id, Command.PAUSE)
    await store.move_broadcast(resumed.id, Command.RESUME)  # a new generation since read

    marked = await store.mark_generations_dispatched([(resumed.id, None), (first.id, None)])
    assert marked == {first.id}
    assert await store.undispatched_broadcasts() == [resumed.id]
    assert await store.mark_generations_dispatched([]) == set()


# -- the dispatcher -------------------------------------------------------------------------


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store.open(f"sqlite+aiosqlite:///{tmp_path / 'tgb.db'}") as opened:
        await opened.migrate()
        yield opened


@pytest.fixture
async def queue(nats_url: str, queue_prefix: str) -> AsyncIterator[Queue]:
    async with Queue.connect(nats_url, prefix=queue_prefix) as connected:
        yield connected


class _Counting:
    """The real store, recording the group calls; ``after_read`` runs after each group read."""

    def __init__(self, store: Store, after_read: Callable[[], Any] | None = None) -> None:
        self._store = store
        self._after_read = after_read
        self.reads: list[list[int]] = []
        self.marks: list[list[int]] = []

    async def small_broadcasts(
        self, broadcast_ids: Sequence[int], **kwargs: Any
    ) -> list[SmallBroadcast]:
        self.reads.append(list(broadcast_ids))
        small = await self._store.small_broadcasts(broadcast_ids, **kwargs)
        if self._after_read is not None:
            await self._after_read()
        return small

    async def mark_generations_dispatched(
        self, generations: Sequence[tuple[int, datetime | None]]
    ) -> set[int]:
        self.marks.append(sorted(broadcast_id for broadcast_id, _ in generations))
        return await self._store.mark_generations_dispatched(generations)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class _FailingOnce:
    """The real queue, but its first publish of jobs fails."""

    def __init__(self, queue: Queue) -> None:
        self._queue = queue
        self.failed = False

    async def publish_jobs(self, jobs: Sequence[Job]) -> None:
        if not self.failed:
            self.failed = True
            raise QueueError("publishing to jobs failed: NATS is away")
        await self._queue.publish_jobs(jobs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)


async def queued(queue: Queue) -> list[Job]:
    return [received.job for received in await drain_jobs(queue)]


async def test_a_backlog_of_small_broadcasts_is_published_as_one_group(
    sqlite_store: Store, queue: Queue
) -> None:
    """Handed over together (the start-up sweep takes every undispatched broadcast at once):
    the small ones are read, published and marked together; the big one is cut into batches
    on its own. A scheduled one handed over is left for its time."""
    smalls = [(await sqlite_store.create_broadcast(to(*range(1, n + 1)))).id for n in (1, 2, 3)]
    big = (await sqlite_store.create_broadcast(to(*range(1, 251)))).id
    scheduled = (await sqlite_store.create_broadcast(to(1, send_at=FUTURE))).id
    counting = _Counting(sqlite_store)
    store = cast(Store, counting)
    async with Dispatcher(store=store, queue=queue, batch_size=100) as dispatcher:
        await dispatcher.wait_idle()
        dispatcher.dispatch(scheduled)  # not taken by the sweep; not sendable yet
        await dispatcher.wait_idle()

    assert counting.reads == [[*smalls, big], [scheduled]]
    assert counting.marks == [smalls]
    assert await sqlite_store.undispatched_broadcasts() == []
    jobs = await queued(queue)
    assert sorted((job.broadcast_id, job.user_ids) for job in jobs if job.broadcast_id != big) == [
        (smalls[0], (1,)),
        (smalls[1], (1, 2)),
        (smalls[2], (1, 2, 3)),
    ]
    big_jobs = sorted(job.user_ids for job in jobs if job.broadcast_id == big)
    assert big_jobs == [tuple(range(1, 101)), tuple(range(101, 201)), tuple(range(201, 251))]
    assert {job.generation for job in jobs} == {0}


async def test_a_group_that_fails_is_published_one_by_one(
    sqlite_store: Store, queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    ids = [(await sqlite_store.create_broadcast(to(n, n + 1))).id for n in (1, 10)]
    failing = _FailingOnce(queue)
    async with Dispatcher(
        store=sqlite_store, queue=cast(Queue, failing), retry_delay=0.01
    ) as dispatcher:
        await dispatcher.wait_idle()

    assert failing.failed
    assert "dispatching a group failed; dispatching each on its own" in caplog.text
    assert await sqlite_store.undispatched_broadcasts() == []
    jobs = sorted((job.broadcast_id, job.user_ids) for job in await queued(queue))
    assert jobs == [(ids[0], (1, 2)), (ids[1], (10, 11))]


async def test_a_broadcast_resumed_while_its_group_is_published_gets_its_new_generation(
    sqlite_store: Store, queue: Queue
) -> None:
    kept = (await sqlite_store.create_broadcast(to(1))).id
    moved = (await sqlite_store.create_broadcast(to(2, 3))).id

    async def pause_and_resume() -> None:
        if len(counting.reads) == 1:  # the group's read only
            await sqlite_store.move_broadcast(moved, Command.PAUSE)
            await sqlite_store.move_broadcast(moved, Command.RESUME)

    counting = _Counting(sqlite_store, after_read=pause_and_resume)
    async with Dispatcher(store=cast(Store, counting), queue=queue) as dispatcher:
        await dispatcher.wait_idle()

    resumed_at = (await sqlite_store.get_broadcast(moved)).resumed_at
    assert resumed_at is not None
    assert await sqlite_store.undispatched_broadcasts() == []
    jobs = sorted((job.broadcast_id, job.generation, job.user_ids) for job in await queued(queue))
    assert jobs == [
        (kept, 0, (1,)),
        (moved, 0, (2, 3)),  # the group's, of the generation it read
        (moved, states.generation(resumed_at), (2, 3)),  # then on its own, the new one
    ]
