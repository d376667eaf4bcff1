"""Fan-out: jobs cover every pending recipient, and nothing stays undispatched after a crash."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fixtures.nats import drain_jobs, wait_until
from tgbroadcast.core.domain.model import Content, NewBroadcast
from tgbroadcast.core.queue import Queue
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
