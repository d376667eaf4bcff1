"""Fan-out: jobs cover every pending recipient, and nothing stays undispatched after a crash."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from tests.fixtures.nats import drain_jobs, wait_until
from tgbroadcast.core.domain.model import Content, NewBroadcast
from tgbroadcast.core.queue import Job, Queue
from tgbroadcast.core.service.dispatch import Dispatcher
from tgbroadcast.core.store import Store


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
