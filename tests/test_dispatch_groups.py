"""Many small broadcasts dispatched at once: the store's read and write for a group, on every
backend (the dispatcher's use of them: tests/test_dispatch.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.fixtures.results import sent
from tgbroadcast.core.domain import states
from tgbroadcast.core.domain.model import (
    Broadcast,
    BroadcastStatus,
    Content,
    NewBroadcast,
)
from tgbroadcast.core.domain.states import Command
from tgbroadcast.core.store import Store

FUTURE = datetime(2999, 1, 1, tzinfo=UTC)


def to(*user_ids: int, send_at: datetime | None = None) -> NewBroadcast:
    return NewBroadcast(content=Content(message="hi"), user_ids=user_ids, send_at=send_at)


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
    assert await store.mark_generations_dispatched([(resumed.id, None)]) == set()  # alone
    assert await store.undispatched_broadcasts() == [resumed.id]
    assert await store.mark_generations_dispatched([]) == set()

    # New ones (one statement marks them all) and the resumed one at its new generation.
    news = [(await store.create_broadcast(to(n))).id for n in (3, 4, 5)]
    generation = (await store.get_broadcast(resumed.id)).resumed_at
    marked = await store.mark_generations_dispatched(
        [(news[2], None), (resumed.id, generation), (news[0], None), (news[1], None)]
    )
    assert marked == {*news, resumed.id}
    assert await store.undispatched_broadcasts() == []


async def test_a_send_generation_is_not_marked_over_a_recall(store: Store) -> None:
    """Recalled between its jobs' publishing and their mark (the recall leaves the
    generation as it was): the recall's own dispatch is still owed, so the broadcast stays
    undispatched for the rescuer, whether marked with others or alone."""
    kept, recalled = [(await store.create_broadcast(to(n))).id for n in (1, 2)]
    await store.move_broadcast(recalled, Command.RECALL)

    marked = await store.mark_generations_dispatched([(kept, None), (recalled, None)])
    assert marked == {kept}
    assert await store.mark_generations_dispatched([(recalled, None)]) == set()
    assert await store.undispatched_broadcasts() == [recalled]
    # The recall's own dispatch marks it.
    assert await store.mark_generation_dispatched(recalled, None)
    assert await store.undispatched_broadcasts() == []
