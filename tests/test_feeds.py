"""Shared event feeds on a real NATS (embedded and external): every watcher of a broadcast in
a process reads one consumer; each gets every event once, in stream order, whatever its pace;
a watcher behind the window reads its gap on a consumer of its own and comes back; the
consumer goes with the last watcher."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing

import pytest

from tests.fixtures.nats import wait_until
from tests.test_queue import result
from tgbroadcast.core.queue import Idle, Queue, ResultEvent
from tgbroadcast.core.queue import feeds as feeds_module
from tgbroadcast.core.queue.feeds import EventFeeds
from tgbroadcast.core.queue.watching import Sequenced

BROADCAST = 7


async def watch_consumers(queue: Queue, broadcast_id: int = BROADCAST) -> int:
    consumers = await queue.jetstream.consumers_info(queue.names.events_stream)
    return sum((c.name or "").startswith(f"watch-{broadcast_id}-") for c in consumers)


async def take(events: AsyncGenerator[Sequenced | Idle, None], count: int) -> list[tuple[int, int]]:
    """The next ``count`` events as (stream seq, user id), skipping idles."""
    taken: list[tuple[int, int]] = []
    while len(taken) < count:
        item = await anext(events)
        if isinstance(item, Sequenced):
            assert isinstance(item.event, ResultEvent)
            taken.append((item.seq, item.event.result.user_id))
    return taken


async def publish(queue: Queue, user_ids: range, broadcast_id: int = BROADCAST) -> None:
    await queue.publish_events([result(broadcast_id, user_id) for user_id in user_ids])


async def test_watchers_of_a_broadcast_share_one_consumer(nats_url: str, queue_prefix: str) -> None:
    async with Queue.connect(nats_url, prefix=queue_prefix) as queue:
        feeds = EventFeeds(queue)
        await publish(queue, range(1, 6))
        watchers = [feeds.watch(BROADCAST, idle_after=0.2) for _ in range(50)]
        try:
            firsts = await asyncio.gather(*(take(w, 5) for w in watchers))
            assert await watch_consumers(queue) == 1
            assert feeds.consumers == 1
            await publish(queue, range(6, 11))
            seconds = await asyncio.gather(*(take(w, 5) for w in watchers))
            users = [[u for _, u in a + b] for a, b in zip(firsts, seconds, strict=True)]
            assert users == [list(range(1, 11))] * 50
            # Another broadcast is its own feed.
            async with aclosing(feeds.watch(BROADCAST + 1, idle_after=0.2)) as other:
                assert isinstance(await anext(other), Idle)
                assert feeds.consumers == 2
        finally:
            for watcher in watchers:
                await watcher.aclose()
        assert feeds.consumers == 0
        await wait_until(lambda: _none_left(queue))


async def _none_left(queue: Queue) -> bool:
    return await watch_consumers(queue) == 0


async def test_a_slow_watcher_reads_its_gap_and_holds_up_no_one(
    nats_url: str, queue_prefix: str
) -> None:
    """Window of 4: a watcher that stops reading while 30 events arrive falls behind the
    window; the fast one is never held; the slow one gets all 30 in order, each once, on a
    consumer of its own that goes when it has caught up. A watcher joining late, from a
    sequence past its start, gets what follows it."""
    async with Queue.connect(nats_url, prefix=queue_prefix) as queue:
        feeds = EventFeeds(queue, window=4)
        async with (
            aclosing(feeds.watch(BROADCAST, idle_after=0.2)) as fast,
            aclosing(feeds.watch(BROADCAST, idle_after=0.2)) as slow,
        ):
            await publish(queue, range(1, 3))
            assert [u for _, u in await take(slow, 2)] == [1, 2]
            await publish(queue, range(3, 31))
            got_fast = await take(fast, 30)
            assert [u for _, u in got_fast] == list(range(1, 31))
            assert await watch_consumers(queue) == 1  # the slow one has not read on yet

            got_slow = await take(slow, 28)
            assert [u for _, u in got_slow] == list(range(3, 31))
            assert [s for s, _ in got_slow] == [s for s, _ in got_fast[2:]]
            await publish(queue, range(31, 34))
            assert [u for _, u in await take(slow, 3)] == [31, 32, 33]
            assert [u for _, u in await take(fast, 3)] == [31, 32, 33]
            await wait_until(lambda: _exactly_one(queue))  # the gap's consumer is gone

            late_from = got_fast[-1][0] + 1  # after event 30: 31, 32, 33 from the window
            async with aclosing(feeds.watch(BROADCAST, late_from, idle_after=0.2)) as late:
                assert [u for _, u in await take(late, 3)] == [31, 32, 33]
            early_from = got_fast[9][0]  # event 10, long gone from the window
            async with aclosing(feeds.watch(BROADCAST, early_from, idle_after=0.2)) as early:
                assert [u for _, u in await take(early, 24)] == list(range(10, 34))
            assert feeds.consumers == 1


async def _exactly_one(queue: Queue) -> bool:
    return await watch_consumers(queue) == 1


async def test_an_idle_watcher_is_told_so(nats_url: str, queue_prefix: str) -> None:
    async with Queue.connect(nats_url, prefix=queue_prefix) as queue:
        feeds = EventFeeds(queue)
        async with aclosing(feeds.watch(BROADCAST, idle_after=0.1)) as watcher:
            assert isinstance(await anext(watcher), Idle)
            await publish(queue, range(1, 2))
            assert [u for _, u in await take(watcher, 1)] == [1]


async def test_a_feed_starts_where_its_first_watcher_resumes(
    nats_url: str, queue_prefix: str
) -> None:
    """A resumed watcher opens the feed at its own position, not at the broadcast's start; a
    watcher from the start, joining next, reads the part before as a gap."""
    async with Queue.connect(nats_url, prefix=queue_prefix) as queue:
        feeds = EventFeeds(queue)
        await publish(queue, range(1, 11))
        async with aclosing(feeds.watch(BROADCAST, idle_after=0.2)) as probe:
            seqs = [seq for seq, _ in await take(probe, 10)]
        assert feeds.consumers == 0
        async with aclosing(feeds.watch(BROADCAST, seqs[5], idle_after=0.2)) as resumed:
            assert [u for _, u in await take(resumed, 5)] == [6, 7, 8, 9, 10]
            async with aclosing(feeds.watch(BROADCAST, idle_after=0.2)) as whole:
                assert [u for _, u in await take(whole, 10)] == list(range(1, 11))
                await publish(queue, range(11, 13))
                assert [u for _, u in await take(whole, 2)] == [11, 12]
                assert [u for _, u in await take(resumed, 2)] == [11, 12]


class _Deaf:
    """Event source whose reads lose the first cancellation (as a NATS fetch can when the
    cancellation lands as its timeout fires, on Python 3.11)."""

    def __init__(self) -> None:
        self.cancellations = 0

    async def watch_from(
        self, broadcast_id: int, start_seq: int, *, idle_after: float = 1.0, batch_size: int = 64
    ) -> AsyncGenerator[Sequenced | Idle, None]:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.cancellations += 1
                if self.cancellations > 1:
                    raise
            yield Idle()


async def test_the_last_watcher_leaving_stops_a_feed_that_missed_its_cancellation() -> None:
    source = _Deaf()
    feeds = EventFeeds(source)  # type: ignore[arg-type]
    async with aclosing(feeds.watch(7, idle_after=0.01)) as watching:
        assert isinstance(await anext(watching), Idle)
    assert source.cancellations == 2  # cancelled again, and then it stopped
    assert feeds.consumers == 0


async def test_new_events_are_handed_over_at_most_every_publish_every(
    nats_url: str, queue_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events published one by one reach a watcher in batches: no more hand-overs than one per
    ``PUBLISH_EVERY`` seconds over the time it took (however slow the machine), every event
    once, in order."""
    monkeypatch.setattr(feeds_module, "PUBLISH_EVERY", 0.2)
    loop = asyncio.get_running_loop()
    async with Queue.connect(nats_url, prefix=queue_prefix) as queue:
        feeds = EventFeeds(queue)
        async with aclosing(feeds.watch_batches(BROADCAST, idle_after=5.0)) as batches:

            async def one_by_one() -> None:
                for user_id in range(1, 21):
                    await publish(queue, range(user_id, user_id + 1))
                    await asyncio.sleep(0.01)

            began = loop.time()
            publishing = asyncio.create_task(one_by_one())
            got: list[int] = []
            handed = 0
            while len(got) < 20:
                batch = await anext(batches)
                assert not isinstance(batch, Idle)
                handed += 1
                got += [item.event.result.user_id for item in batch]  # type: ignore[union-attr]
            took = loop.time() - began
            await publishing
    assert got == list(range(1, 21))
    assert handed <= took / 0.2 + 1
