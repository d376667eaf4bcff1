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
