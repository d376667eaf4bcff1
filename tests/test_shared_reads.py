"""The process's watchers share reads of a broadcast's row (core/service/shared_reads.py): a
caller gets a read begun no earlier than it asked, and as few reads are made as that allows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from typing import cast

import pytest

from tgbroadcast.core.domain.errors import NotFound
from tgbroadcast.core.domain.model import Broadcast, BroadcastStatus, Content
from tgbroadcast.core.metrics import Metrics
from tgbroadcast.core.queue import Idle, Queue
from tgbroadcast.core.queue.watching import Sequenced
from tgbroadcast.core.service import watching
from tgbroadcast.core.service.bot_access import KnownBots
from tgbroadcast.core.service.broadcasting import BroadcastingService
from tgbroadcast.core.service.dispatch import Dispatcher
from tgbroadcast.core.service.shared_reads import SharedReads
from tgbroadcast.core.store import Store


class Rows:
    """A store's ``get_broadcast`` that counts its reads and answers when told to."""

    def __init__(self) -> None:
        self.reads = 0
        self.sent = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: Exception | None = None
        self.began = asyncio.Event()

    async def get_broadcast(self, broadcast_id: int) -> Broadcast:
        self.reads += 1
        sent = self.sent  # the row as the read begins
        self.began.set()
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return Broadcast(
            id=broadcast_id,
            content=Content(message="hi"),
            status=BroadcastStatus.RUNNING,
            total=10,
            sent=sent,
            failed=0,
            created_at=datetime(2026, 12, 5, tzinfo=UTC),
        )


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def shared(rows: Rows, clock: Clock, *, keep: float = 60.0) -> SharedReads:
    return SharedReads(cast(Store, rows), keep=keep, clock=clock)


async def test_callers_that_accept_one_read_share_it() -> None:
    rows, clock = Rows(), Clock()
    reads = shared(rows, clock)
    rows.gate.clear()
    waiting = [asyncio.create_task(reads.get(7, fresh_after=clock.now - 1)) for _ in range(100)]
    await rows.began.wait()
    rows.gate.set()
    assert {b.id for b in await asyncio.gather(*waiting)} == {7}
    assert rows.reads == 1
    clock.now += 0.5  # a read half a second old is still fresh enough for a quiet second
    await reads.get(7, fresh_after=clock.now - 1)
    assert rows.reads == 1
    await reads.get(8, fresh_after=clock.now - 1)  # another broadcast: its own read
    assert rows.reads == 2


async def test_a_caller_never_gets_a_read_begun_before_it_asked() -> None:
    """Those that need a newer read than the one in flight share the next one, begun as it
    ends: not one read each."""
    rows, clock = Rows(), Clock()
    reads = shared(rows, clock)
    rows.gate.clear()
    first = asyncio.create_task(reads.get(7, fresh_after=clock.now))
    await rows.began.wait()  # that read has begun, with sent = 0
    clock.now += 0.001
    rows.sent = 3  # a finish committed; its event reached fifty watchers that ask now
    later = [asyncio.create_task(reads.get(7, fresh_after=clock.now)) for _ in range(50)]
    rows.gate.set()
    assert (await first).sent == 0
    assert {b.sent for b in await asyncio.gather(*later)} == {3}
    assert rows.reads == 2


async def test_a_caller_that_leaves_does_not_cancel_the_read_for_the_others() -> None:
    rows, clock = Rows(), Clock()
    reads = shared(rows, clock)
    rows.gate.clear()
    leaving = asyncio.create_task(reads.get(7, fresh_after=clock.now))
    staying = asyncio.create_task(reads.get(7, fresh_after=clock.now))
    await rows.began.wait()
    leaving.cancel()
    rows.gate.set()
    assert (await staying).id == 7
    assert leaving.cancelled()
    assert rows.reads == 1


async def test_a_failure_reaches_its_callers_and_is_not_kept() -> None:
    rows, clock = Rows(), Clock()
    reads = shared(rows, clock)
    rows.fail = NotFound("broadcast 7 not found")
    rows.gate.clear()
    waiting = [asyncio.create_task(reads.get(7, fresh_after=clock.now)) for _ in range(3)]
    await rows.began.wait()
    rows.gate.set()
    for task in waiting:
        with pytest.raises(NotFound):
            await task
    assert rows.reads == 1
    rows.fail = None
    assert (await reads.get(7, fresh_after=clock.now - 1)).id == 7  # read again, not the failure
    assert rows.reads == 2


async def test_reads_are_dropped_after_they_are_kept() -> None:
    rows, clock = Rows(), Clock()
    reads = shared(rows, clock, keep=0.0)
    await reads.get(7, fresh_after=clock.now)
    for _ in range(10):  # the drop is scheduled on the loop with no delay
        if not reads.kept:
            break
        await asyncio.sleep(0)
    assert reads.kept == 0


class QuietEvents:
    """An event source on which each watcher gets one quiet second (``Idle()``), then
    nothing; ``waiting`` counts the watchers past it."""

    def __init__(self) -> None:
        self.waiting = 0
        self.all_waiting = asyncio.Event()
        self.watchers = 0

    async def watch_batches(
        self, broadcast_id: int, start_seq: int = 1, *, idle_after: float = 1.0
    ) -> AsyncGenerator[list[Sequenced] | Idle, None]:
        yield Idle()
        self.waiting += 1
        if self.waiting == self.watchers:
            self.all_waiting.set()
        await asyncio.Event().wait()
        yield Idle()  # never reached


async def test_a_quiet_second_of_many_watchers_is_one_read() -> None:
    """Every watcher of a running broadcast reads it after a quiet second: through the
    process's shared reads, fifty watchers at once make one read."""
    rows, clock = Rows(), Clock()
    reads, events = shared(rows, clock), QuietEvents()
    broadcast = await rows.get_broadcast(7)
    rows.reads = 0
    events.watchers = 50

    async def follow() -> None:
        async for _ in watching.watch(cast(Store, rows), events, broadcast, reads=reads):
            pass

    watchers = [asyncio.create_task(follow()) for _ in range(events.watchers)]
    try:
        await events.all_waiting.wait()
        assert rows.reads == 1
    finally:
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)


async def test_watches_starting_together_share_their_reads() -> None:
    """A crowd of dashboards opening a watch at once reads the broadcast once or twice (the
    first caller's read, and one begun after it for those who came after it began); each
    still gets NOT_FOUND for a bot it may not see."""
    rows = Rows()
    rows.gate.clear()  # the read waits until every watch has asked
    service = BroadcastingService(
        store=cast(Store, rows),
        queue=cast(Queue, None),
        dispatcher=cast(Dispatcher, None),
        metrics=cast(Metrics, None),
        bots=cast(KnownBots, None),
        max_user_ids=10,
    )
    starts = [asyncio.create_task(service.watchable(7)) for _ in range(20)]
    hidden = asyncio.create_task(service.watchable(7, visible={"another-bot"}))
    await rows.began.wait()  # the read's task began after every start's first step
    rows.gate.set()
    assert [b.id for b in await asyncio.gather(*starts)] == [7] * 20
    with pytest.raises(NotFound):
        await hidden
    assert rows.reads <= 2
