"""Fan-out: jobs cover every pending recipient, nothing stays undispatched after a crash, and a
backlog of small broadcasts is published as one group (one read, one publish, one write), the
others and a group that fails one by one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest

from tests.fixtures.nats import drain_jobs, wait_until
from tgbroadcast.core.domain import states
from tgbroadcast.core.domain.errors import QueueError
from tgbroadcast.core.domain.model import Content, NewBroadcast
from tgbroadcast.core.domain.states import Command
from tgbroadcast.core.queue import Job, Queue
from tgbroadcast.core.service import dispatch
from tgbroadcast.core.service.dispatch import Dispatcher
from tgbroadcast.core.store import SmallBroadcast, Store

FUTURE = datetime(2999, 1, 1, tzinfo=UTC)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store.open(f"sqlite+aiosqlite:///{tmp_path / 'tgb.db'}") as opened:
        await opened.migrate()
        yield opened


@pytest.fixture
async def queue(nats_url: str, queue_prefix: str) -> AsyncIterator[Queue]:
    async with Queue.connect(nats_url, prefix=queue_prefix) as connected:
        yield connected


async def create(store: Store, count: int) -> int:
    broadcast = await store.create_broadcast(
        NewBroadcast(content=Content(message="hi"), user_ids=tuple(range(1, count + 1)))
    )
    return broadcast.id


def to(*user_ids: int, send_at: datetime | None = None) -> NewBroadcast:
    return NewBroadcast(content=Content(message="hi"), user_ids=user_ids, send_at=send_at)


async def queued_recipients(queue: Queue) -> list[int]:
    return [user_id for received in await drain_jobs(queue) for user_id in received.job.user_ids]


async def test_dispatch_covers_every_recipient_in_batches(store: Store, queue: Queue) -> None:
    broadcast_id = await create(store, 250)
    async with Dispatcher(store=store, queue=queue, batch_size=100) as dispatcher:
        await dispatcher.wait_idle()  # the start-up sweep took it
        assert await store.undispatched_broadcasts() == []
    assert sorted(await queued_recipients(queue)) == list(range(1, 251))
    assert await queue.pending_jobs() == 0
    assert (await store.get_broadcast(broadcast_id)).total == 250


async def test_the_rescuer_takes_over_a_broadcast_left_undispatched(
    store: Store, queue: Queue
) -> None:
    async with Dispatcher(store=store, queue=queue, sweep_interval=0.05, stale_after=0.0):
        # As if a server stored it, answered 202 and was killed before publishing.
        broadcast_id = await create(store, 30)
        await wait_until(lambda: _dispatched(store))
    assert sorted(await queued_recipients(queue)) == list(range(1, 31))
    assert (await store.get_broadcast(broadcast_id)).status.value == "queued"


async def _dispatched(store: Store) -> bool:
    return await store.undispatched_broadcasts() == []


class _HeldQueue:
    """The real queue, but the jobs of one broadcast wait at their publish until released."""

    def __init__(self, queue: Queue, held: int) -> None:
        self._queue = queue
        self._held = held
        self.waiting = asyncio.Event()
        self.release = asyncio.Event()

    async def publish_jobs(self, jobs: Sequence[Job]) -> None:
        if any(job.broadcast_id == self._held for job in jobs):
            self.waiting.set()
            await self.release.wait()
        await self._queue.publish_jobs(jobs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)


async def test_a_small_broadcast_is_not_held_behind_a_big_fan_out(
    store: Store, queue: Queue
) -> None:
    """The big broadcast's fan-out is stuck at its publish; a broadcast handed over after it
    is published meanwhile. One at a time, the small one would wait for the big one."""
    big, small = await create(store, 300), await create(store, 3)
    held = _HeldQueue(queue, big)
    async with Dispatcher(store=store, queue=cast(Queue, held), batch_size=100) as dispatcher:
        await held.waiting.wait()  # the start-up sweep took both, the big one first
        await wait_until(lambda: _dispatched_only(store, small))
        held.release.set()
        await dispatcher.wait_idle()
    assert await store.undispatched_broadcasts() == []
    assert sorted(await queued_recipients(queue)) == sorted([*range(1, 301), 1, 2, 3])


async def test_stopping_mid_dispatch_says_what_is_left_undispatched(
    store: Store, queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    """A server drained while a fan-out is at its publish: a line names what is left (the
    next start, or another server's rescuer, dispatches it; SQL says so)."""
    big = await create(store, 300)
    held = _HeldQueue(queue, big)
    async with Dispatcher(store=store, queue=cast(Queue, held), batch_size=100):
        await held.waiting.wait()
    [line] = [r for r in caplog.records if "not yet dispatched" in r.getMessage()]
    assert (getattr(line, "broadcasts", None), getattr(line, "first", None)) == (1, big)
    assert await store.undispatched_broadcasts() == [big]


async def _dispatched_only(store: Store, broadcast_id: int) -> bool:
    return broadcast_id not in await store.undispatched_broadcasts()


# -- groups: broadcasts handed over together ---------------------------------------------
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
    store: Store, queue: Queue
) -> None:
    """Handed over together (the start-up sweep takes every undispatched broadcast at once):
    the small ones are read, published and marked together; the big one is cut into batches
    on its own. A scheduled one handed over is left for its time."""
    smalls = [(await store.create_broadcast(to(*range(1, n + 1)))).id for n in (1, 2, 3)]
    big = (await store.create_broadcast(to(*range(1, 251)))).id
    scheduled = (await store.create_broadcast(to(1, send_at=FUTURE))).id
    counting = _Counting(store)
    store = cast(Store, counting)
    async with Dispatcher(store=store, queue=queue, batch_size=100) as dispatcher:
        await dispatcher.wait_idle()
        dispatcher.dispatch(scheduled)  # not taken by the sweep; not sendable yet
        await dispatcher.wait_idle()

    assert counting.reads == [[*smalls, big], [scheduled]]
    assert counting.marks == [smalls]
    assert await store.undispatched_broadcasts() == []
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
    store: Store, queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    ids = [(await store.create_broadcast(to(n, n + 1))).id for n in (1, 10)]
    failing = _FailingOnce(queue)
    async with Dispatcher(store=store, queue=cast(Queue, failing), retry_delay=0.01) as dispatcher:
        await dispatcher.wait_idle()

    assert failing.failed
    assert "dispatching a group failed; dispatching each on its own" in caplog.text
    assert await store.undispatched_broadcasts() == []
    jobs = sorted((job.broadcast_id, job.user_ids) for job in await queued(queue))
    assert jobs == [(ids[0], (1, 2)), (ids[1], (10, 11))]


async def test_a_broadcast_resumed_while_its_group_is_published_gets_its_new_generation(
    store: Store, queue: Queue
) -> None:
    kept = (await store.create_broadcast(to(1))).id
    moved = (await store.create_broadcast(to(2, 3))).id

    async def pause_and_resume() -> None:
        if len(counting.reads) == 1:  # the group's read only
            await store.move_broadcast(moved, Command.PAUSE)
            await store.move_broadcast(moved, Command.RESUME)

    counting = _Counting(store, after_read=pause_and_resume)
    async with Dispatcher(store=cast(Store, counting), queue=queue) as dispatcher:
        await dispatcher.wait_idle()

    resumed_at = (await store.get_broadcast(moved)).resumed_at
    assert resumed_at is not None
    assert await store.undispatched_broadcasts() == []
    jobs = sorted((job.broadcast_id, job.generation, job.user_ids) for job in await queued(queue))
    assert jobs == [
        (kept, 0, (1,)),
        (moved, 0, (2, 3)),  # the group's, of the generation it read
        (moved, states.generation(resumed_at), (2, 3)),  # then on its own, the new one
    ]


# -- recipients handed over by the request that created the broadcast ------------------------
class _Reading:
    """The real store, counting the broadcasts whose recipients were read to cut jobs."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.cut_from_sql: list[int] = []

    def job_batches(self, broadcast_id: int, **kwargs: Any) -> AsyncIterator[tuple[int, ...]]:
        self.cut_from_sql.append(broadcast_id)
        return self._store.job_batches(broadcast_id, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


SHUFFLED = tuple(sorted(range(1, 251), key=lambda n: (n * 7919) % 251))
"""250 distinct recipients in no order, as a request lists them."""


async def test_a_new_broadcast_is_cut_from_the_recipients_handed_over(
    store: Store, queue: Queue
) -> None:
    """Handed over with its recipients, a new broadcast's jobs are cut from them, not read
    back: the same batches and job ids as from SQL."""
    reading = _Reading(store)
    async with Dispatcher(store=cast(Store, reading), queue=queue, batch_size=100) as dispatcher:
        broadcast = await store.create_broadcast(to(*SHUFFLED))
        dispatcher.dispatch(broadcast.id, recipients=SHUFFLED)
        await dispatcher.wait_idle()

    assert reading.cut_from_sql == []
    assert await store.undispatched_broadcasts() == []
    from_sql = [
        Job(broadcast_id=broadcast.id, user_ids=batch)
        async for batch in store.job_batches(broadcast.id, batch_size=100)
    ]
    jobs = await queued(queue)
    assert sorted(job.msg_id for job in jobs) == sorted(job.msg_id for job in from_sql)
    assert sorted(job.user_ids for job in jobs) == [
        tuple(range(1, 101)),
        tuple(range(101, 201)),
        tuple(range(201, 251)),
    ]


async def test_a_retried_dispatch_reads_the_recipients_from_sql(store: Store, queue: Queue) -> None:
    """The recipients handed over serve the first attempt only: a retry (or a resume, a
    rescue) cuts the jobs from what SQL holds then."""
    reading = _Reading(store)
    failing = _FailingOnce(queue)
    async with Dispatcher(
        store=cast(Store, reading), queue=cast(Queue, failing), batch_size=100, retry_delay=0.01
    ) as dispatcher:
        broadcast = await store.create_broadcast(to(*SHUFFLED))
        dispatcher.dispatch(broadcast.id, recipients=SHUFFLED)
        await dispatcher.wait_idle()

    assert failing.failed
    assert reading.cut_from_sql == [broadcast.id]
    assert await store.undispatched_broadcasts() == []
    assert sorted(await queued_recipients(queue)) == list(range(1, 251))


async def test_recipients_beyond_the_limits_are_read_from_sql(
    store: Store, queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More recipients than are kept for one broadcast, or than fit beside those kept for
    the broadcasts waiting, are read from SQL; those kept go once their broadcast is
    dispatched."""
    monkeypatch.setattr(dispatch, "HANDED_PER_BROADCAST", 200)
    monkeypatch.setattr(dispatch, "HANDED_IN_ALL", 300)
    reading = _Reading(store)
    async with Dispatcher(store=cast(Store, reading), queue=queue, batch_size=100) as dispatcher:
        kept, beside, big, later = [
            await store.create_broadcast(to(*ids))
            for ids in (range(1000, 1200), range(2000, 2150), SHUFFLED, range(3000, 3150))
        ]
        dispatcher.dispatch(kept.id, recipients=range(1000, 1200))
        dispatcher.dispatch(beside.id, recipients=range(2000, 2150))  # 200 + 150 > 300
        dispatcher.dispatch(big.id, recipients=SHUFFLED)  # 250 > 200
        await dispatcher.wait_idle()
        dispatcher.dispatch(later.id, recipients=range(3000, 3150))  # the 200 kept are gone
        await dispatcher.wait_idle()

    assert sorted(reading.cut_from_sql) == sorted([beside.id, big.id])
    assert await store.undispatched_broadcasts() == []
    assert len(await queued_recipients(queue)) == 200 + 150 + 250 + 150


async def test_a_small_broadcast_handed_over_by_its_creator_is_not_read_back(
    store: Store, queue: Queue
) -> None:
    """Handed over with its recipients and as it was committed, a broadcast that fits in one
    job is published with the job a read would make (the same id), without the read; one
    handed over without them is read. Both are marked in the group's one write."""
    counting = _Counting(store)
    async with Dispatcher(store=cast(Store, counting), queue=queue, batch_size=100) as dispatcher:
        handed = await store.create_broadcast(to(*SHUFFLED[:40]))
        bare = await store.create_broadcast(to(7, 8))
        dispatcher.dispatch(handed.id, recipients=SHUFFLED[:40], created=handed)
        dispatcher.dispatch(bare.id)  # (handed over together: one group)
        await dispatcher.wait_idle()

    assert counting.reads == [[bare.id]]
    assert counting.marks == [sorted([handed.id, bare.id])]
    assert await store.undispatched_broadcasts() == []
    [read] = await store.small_broadcasts([handed.id], max_recipients=100, eligible=bool)
    jobs = {job.broadcast_id: job for job in await queued(queue)}
    assert jobs[handed.id].msg_id == Job(broadcast_id=handed.id, user_ids=read.recipients).msg_id
    assert jobs[handed.id].user_ids == tuple(sorted(SHUFFLED[:40]))
    assert jobs[bare.id].user_ids == (7, 8)


async def test_a_failed_group_of_handed_broadcasts_is_read_one_by_one(
    store: Store, queue: Queue
) -> None:
    """The group's publish fails: each broadcast handed over by its creator is then
    dispatched on its own, read from SQL, with the same job."""
    failing = _FailingOnce(queue)
    counting = _Counting(store)
    async with Dispatcher(
        store=cast(Store, counting), queue=cast(Queue, failing), retry_delay=0.01
    ) as dispatcher:
        audiences = [(1, 2), (10, 11)]
        created = [await store.create_broadcast(to(*ids)) for ids in audiences]
        for broadcast, ids in zip(created, audiences, strict=True):
            dispatcher.dispatch(broadcast.id, recipients=ids, created=broadcast)
        await dispatcher.wait_idle()

    assert failing.failed
    assert counting.reads == []  # the group was not read; each was, on its own, after
    assert await store.undispatched_broadcasts() == []
    jobs = sorted((job.broadcast_id, job.user_ids) for job in await queued(queue))
    assert jobs == [(created[0].id, (1, 2)), (created[1].id, (10, 11))]
