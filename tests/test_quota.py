"""``server.max_pending_recipients`` in the core, on every backend: the cheap counts it is
checked against, and concurrent sends in one process that cannot pass on the same count."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from tgbroadcast.core.domain.errors import ResourceExhausted
from tgbroadcast.core.domain.model import Content, NewBroadcast, UserFilter, UserProfile
from tgbroadcast.core.domain.states import Command
from tgbroadcast.core.service.quota import PendingRecipientsQuota
from tgbroadcast.core.store import Store

LATER = datetime(2999, 1, 1, tzinfo=UTC)


def scheduled(*user_ids: int) -> NewBroadcast:
    return NewBroadcast(content=Content(message="later"), user_ids=user_ids, send_at=LATER)


async def test_pending_recipients_sum_the_unfinished_broadcasts(store: Store) -> None:
    assert await store.pending_recipients() == 0
    first = await store.create_broadcast(scheduled(1, 2, 3))
    await store.create_broadcast(scheduled(4, 5))
    await store.create_broadcast(scheduled())  # no recipient: completed at once
    assert await store.pending_recipients() == 5
    await store.move_broadcast(first.id, Command.CANCEL)
    assert await store.pending_recipients() == 2


async def test_an_audience_is_counted_on_the_active_users(store: Store) -> None:
    await store.upsert_users(
        [UserProfile(id=i, tags=("beta",) if i % 2 else ()) for i in range(1, 11)]
    )
    assert await store.audience_size(None) == 10
    assert await store.audience_size(UserFilter(tags=("beta",))) == 5
    assert await store.audience_size(UserFilter(tags=("nobody",))) == 0


async def test_a_send_over_the_limit_is_refused_naming_the_counts(store: Store) -> None:
    quota = PendingRecipientsQuota(store, 3)
    await store.create_broadcast(scheduled(1, 2))
    assert await quota.size(scheduled(3, 4)) == 2
    with pytest.raises(ResourceExhausted, match=r"2 more recipients .* from 2 above .*\(3\)"):
        await quota.check(2)
    await quota.check(1)
    await quota.check(0)


async def test_without_a_limit_nothing_is_counted(store: Store) -> None:
    quota = PendingRecipientsQuota(store, None)
    await store.upsert_users([UserProfile(id=1)])
    assert await quota.size(NewBroadcast(content=Content(message="x"), all_users=True)) == 0
    await quota.check(10**12)


async def test_concurrent_sends_in_one_process_cannot_overshoot(store: Store) -> None:
    quota = PendingRecipientsQuota(store, 3)

    async def send(user_id: int) -> bool:
        try:
            async with quota.admitting(1):
                await store.create_broadcast(scheduled(user_id))
        except ResourceExhausted:
            return False
        return True

    admitted = await asyncio.gather(*(send(user_id) for user_id in range(1, 9)))
    assert sum(admitted) == 3
    assert await store.pending_recipients() == 3


async def test_a_slow_write_holds_a_reservation_not_the_lock(store: Store) -> None:
    """While one send is being written (held on an event), a second that would exceed the
    limit with it is refused at once and an unrelated small one is admitted and written."""
    quota = PendingRecipientsQuota(store, 3)
    writing, release = asyncio.Event(), asyncio.Event()

    async def slow_send() -> None:
        async with quota.admitting(2):
            writing.set()
            await release.wait()
            await store.create_broadcast(scheduled(1, 2))

    slow = asyncio.create_task(slow_send())
    await writing.wait()
    assert quota.reserved == 2
    with pytest.raises(ResourceExhausted, match=r"2 more recipients .* from 2 above"):
        async with quota.admitting(2):
            pytest.fail("admitted over the limit")
    async with quota.admitting(1):  # not blocked by the slow write
        await store.create_broadcast(scheduled(3))
    assert not slow.done()
    release.set()
    await slow
    assert quota.reserved == 0
    assert await store.pending_recipients() == 3


async def test_sends_ending_while_the_count_is_read_are_not_forgotten(store: Store) -> None:
    """Three sends commit (as one group) while a fourth's count is read from a snapshot
    taken before them: the fourth is refused on their reservations, and a fifth is not
    admitted as if the count were still far below the limit."""
    reading, read = asyncio.Event(), asyncio.Event()
    count = store.pending_recipients

    async def counting_before_the_writes() -> int:
        counted = await count()
        if not read.is_set():
            reading.set()
            await read.wait()
        return counted

    quota = PendingRecipientsQuota(store, 3, fresh=3600.0)
    go = asyncio.Event()
    admitted: list[asyncio.Event] = []

    async def send(user_id: int, entered: asyncio.Event) -> None:
        async with quota.admitting(1):
            entered.set()
            await go.wait()
            await store.create_broadcast(scheduled(user_id))

    sends = []
    for user_id in (1, 2, 3):
        admitted.append(asyncio.Event())
        sends.append(asyncio.create_task(send(user_id, admitted[-1])))
        await admitted[-1].wait()
    assert quota.reserved == 3
    store.pending_recipients = counting_before_the_writes  # type: ignore[method-assign]

    async def fourth() -> None:
        async with quota.admitting(1):
            pytest.fail("admitted over the limit")

    refused = asyncio.create_task(fourth())
    await reading.wait()  # its count (0) is read; the three write and end meanwhile
    go.set()
    await asyncio.gather(*sends)
    read.set()
    with pytest.raises(ResourceExhausted, match=r"from 3 above"):
        await refused
    store.pending_recipients = count  # type: ignore[method-assign]
    with pytest.raises(ResourceExhausted, match=r"from 3 above"):
        async with quota.admitting(1):
            pytest.fail("admitted over the limit")
    assert await store.pending_recipients() == 3


async def test_a_failed_write_releases_its_reservation(store: Store) -> None:
    quota = PendingRecipientsQuota(store, 3)
    with pytest.raises(RuntimeError):
        async with quota.admitting(3):
            raise RuntimeError("write failed")
    assert quota.reserved == 0
    async with quota.admitting(3):
        await store.create_broadcast(scheduled(1, 2, 3))


async def test_far_below_the_limit_a_recent_count_is_reused(store: Store) -> None:
    """Many small sends far below the limit count once; close to it, every send counts (and
    sends admitted since the count are added to it meanwhile)."""
    counts = 0
    count = store.pending_recipients

    async def counting() -> int:
        nonlocal counts
        counts += 1
        return await count()

    store.pending_recipients = counting  # type: ignore[method-assign]
    quota = PendingRecipientsQuota(store, 40, fresh=3600.0)
    for user_id in range(1, 11):  # 10 of 40: far below
        async with quota.admitting(1):
            await store.create_broadcast(scheduled(user_id))
    assert counts == 1
    async with quota.admitting(15):  # 10 + 15 > 40 / 2: counted again
        await store.create_broadcast(scheduled(*range(100, 115)))
    assert counts == 2
    with pytest.raises(ResourceExhausted, match=r"16 more recipients .* from 25 above"):
        async with quota.admitting(16):
            pytest.fail("admitted over the limit")
    assert counts == 3

    # An old count is not trusted, however far below the limit.
    stale = PendingRecipientsQuota(store, 10**6, fresh=0.0)
    for user_id in (201, 202):
        async with stale.admitting(1):
            await store.create_broadcast(scheduled(user_id))
    assert counts == 5
