"""The lifecycle against the store, on every backend: every command from every state, the
writers of the send path respecting paused and cancelled, listing, scheduling, generations,
and idempotency keys."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest

from tests.fixtures.nats import drain_jobs
from tgbroadcast.core.background.scheduler import Scheduler
from tgbroadcast.core.domain import states
from tgbroadcast.core.domain.errors import AlreadyExists, FailedPrecondition, NotFound
from tgbroadcast.core.domain.model import (
    Broadcast,
    BroadcastStatus,
    Content,
    DeliveryResult,
    DeliveryState,
    NewBroadcast,
    RecallOutcome,
)
from tgbroadcast.core.domain.states import Command
from tgbroadcast.core.queue import Job, Queue
from tgbroadcast.core.service.dispatch import Dispatcher
from tgbroadcast.core.store import RecallResult, Store

S = BroadcastStatus
HELLO = Content(message="hello")
AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
FUTURE = datetime(2999, 1, 1, tzinfo=UTC)


@pytest.fixture
async def queue(nats_url: str, queue_prefix: str) -> AsyncIterator[Queue]:
    async with Queue.connect(nats_url, prefix=queue_prefix) as connected:
        yield connected


async def queued_jobs(queue: Queue) -> list[Job]:
    """Every job in the queue, acked (as workers dropping a paused broadcast's jobs do)."""
    return [received.job for received in await drain_jobs(queue)]


def to(*user_ids: int, send_at: datetime | None = None, key: str | None = None) -> NewBroadcast:
    return NewBroadcast(content=HELLO, user_ids=user_ids, send_at=send_at, idempotency_key=key)


def sent(broadcast_id: int, user_id: int) -> DeliveryResult:
    return DeliveryResult(
        broadcast_id=broadcast_id,
        user_id=user_id,
        state=DeliveryState.SENT,
        finished_at=AT,
        message_id=7,
    )


async def _scheduled(store: Store) -> Broadcast:
    return await store.create_broadcast(to(1, 2, send_at=FUTURE))


async def _queued(store: Store) -> Broadcast:
    return await store.create_broadcast(to(1, 2))


async def _running(store: Store) -> Broadcast:
    created = await store.create_broadcast(to(1, 2))
    await store.record_results([sent(created.id, 1)])
    return await store.get_broadcast(created.id)


async def _paused_queued(store: Store) -> Broadcast:
    created = await store.create_broadcast(to(1, 2))
    return await store.move_broadcast(created.id, Command.PAUSE)


async def _paused_running(store: Store) -> Broadcast:
    running = await _running(store)
    return await store.move_broadcast(running.id, Command.PAUSE)


async def _completed(store: Store) -> Broadcast:
    created = await store.create_broadcast(to(1))
    await store.record_results([sent(created.id, 1)])
    return await store.get_broadcast(created.id)


async def _cancelled(store: Store) -> Broadcast:
    created = await store.create_broadcast(to(1, 2))
    return await store.move_broadcast(created.id, Command.CANCEL)


async def _failed(store: Store) -> Broadcast:
    created = await store.create_broadcast(to(1, 2))
    stopped = await store.fail_broadcast(created.id, "content error")
    assert stopped is not None
    return stopped


async def _recalling(store: Store) -> Broadcast:
    completed = await _completed(store)
    return await store.move_broadcast(completed.id, Command.RECALL)


async def _recalled(store: Store) -> Broadcast:
    recalling = await _recalling(store)  # its one recipient's recall recorded: nobody left
    await store.record_recalls(
        [RecallResult(broadcast_id=recalling.id, user_id=1, outcome=RecallOutcome.DELETED, at=AT)]
    )
    finished = await store.finish_recall(recalling.id, now=datetime.now(UTC))
    assert finished is not None
    assert finished.status is S.RECALLED
    return await store.get_broadcast(recalling.id, actions=True)


SETUPS: dict[str, Callable[[Store], Awaitable[Broadcast]]] = {
    "scheduled": _scheduled,
    "queued": _queued,
    "running": _running,
    "paused-before-start": _paused_queued,
    "paused-after-start": _paused_running,
    "completed": _completed,
    "cancelled": _cancelled,
    "failed": _failed,
    "recalling": _recalling,
    "recalled": _recalled,
}

EXPECTED: dict[tuple[str, Command], BroadcastStatus | None] = {
    ("scheduled", Command.CANCEL): S.CANCELLED,
    ("scheduled", Command.PAUSE): None,
    ("scheduled", Command.RESUME): None,
    ("scheduled", Command.START): S.QUEUED,
    ("scheduled", Command.RECALL): None,
    ("queued", Command.RECALL): S.RECALLING,
    ("running", Command.RECALL): S.RECALLING,
    ("paused-before-start", Command.RECALL): S.RECALLING,
    ("paused-after-start", Command.RECALL): S.RECALLING,
    ("queued", Command.CANCEL): S.CANCELLED,
    ("queued", Command.PAUSE): S.PAUSED,
    ("queued", Command.RESUME): None,
    ("queued", Command.START): None,
    ("running", Command.CANCEL): S.CANCELLED,
    ("running", Command.PAUSE): S.PAUSED,
    ("running", Command.RESUME): None,
    ("running", Command.START): None,
    ("paused-before-start", Command.CANCEL): S.CANCELLED,
    ("paused-before-start", Command.PAUSE): None,
    ("paused-before-start", Command.RESUME): S.QUEUED,
    ("paused-before-start", Command.START): None,
    ("paused-after-start", Command.CANCEL): S.CANCELLED,
    ("paused-after-start", Command.PAUSE): None,
    ("paused-after-start", Command.RESUME): S.RUNNING,
    ("paused-after-start", Command.START): None,
    **{
        (final, command): S.RECALLING if command is Command.RECALL else None
        for final in ("completed", "cancelled", "failed")
        for command in Command
    },
    **{(recall, command): None for recall in ("recalling", "recalled") for command in Command},
}
"""Every command from every state: where it leads, or None when it is refused."""


def test_the_table_covers_every_state_and_command() -> None:
    assert {state for state, _ in EXPECTED} == set(SETUPS)
    assert len(EXPECTED) == len(SETUPS) * len(Command)
    for status in BroadcastStatus:
        assert status in states.TRANSITIONS
        # A final state moves on only when recalled.
        assert states.TRANSITIONS[status] <= {S.RECALLING} or not status.is_final
    # Each command only makes moves the table allows.
    targets = {
        Command.CANCEL: {S.CANCELLED},
        Command.PAUSE: {S.PAUSED},
        Command.RESUME: {S.QUEUED, S.RUNNING},
        Command.START: {S.QUEUED},
        Command.RECALL: {S.RECALLING},
    }
    for command, reached in targets.items():
        for source in command.sources:
            assert reached & states.TRANSITIONS[source], (command, source)


@pytest.mark.parametrize(("setup", "command"), sorted(EXPECTED, key=str))
async def test_every_command_from_every_state(store: Store, setup: str, command: Command) -> None:
    before = await SETUPS[setup](store)
    expected = EXPECTED[setup, command]
    if expected is None:
        with pytest.raises(FailedPrecondition) as refused:
            await store.move_broadcast(before.id, command)
        assert refused.value.state == before.status.value
        assert f"is {before.status.value}" in str(refused.value)
        assert await store.get_broadcast(before.id, actions=True) == before  # nothing written
        return
    after = await store.move_broadcast(before.id, command)
    assert after.status is expected
    assert after.status in states.TRANSITIONS[before.status]
    assert after == await store.get_broadcast(before.id, actions=True)
    assert (after.sent, after.failed, after.total) == (before.sent, before.failed, before.total)
    if command is Command.CANCEL:
        assert after.finished_at is not None
    if command is Command.RESUME:
        assert after.resumed_at is not None
        assert states.generation(after.resumed_at) > states.generation(before.resumed_at)
        assert await store.undispatched_broadcasts() == [after.id]
    if command is Command.RECALL:  # its recall jobs are to be cut; a final time is kept
        assert after.recall_at is not None
        assert after.finished_at == before.finished_at
        assert await store.undispatched_broadcasts() == [after.id]
        assert after.actions[-1].action.value == "recall"


async def test_unknown_broadcast_is_not_found(store: Store) -> None:
    for command in Command:
        with pytest.raises(NotFound):
            await store.move_broadcast(404, command)


async def test_concurrent_movers_make_exactly_one_move(store: Store) -> None:
    created = await store.create_broadcast(to(1, 2, 3))
    outcomes = await asyncio.gather(
        *(store.move_broadcast(created.id, Command.CANCEL) for _ in range(4)),
        *(store.move_broadcast(created.id, Command.PAUSE) for _ in range(4)),
        return_exceptions=True,
    )
    moved = [o for o in outcomes if isinstance(o, Broadcast)]
    refused = [o for o in outcomes if isinstance(o, FailedPrecondition)]
    final = await store.get_broadcast(created.id)
    # Either one pause then one cancel (paused → cancelled is legal), or one cancel first.
    assert len(moved) + len(refused) == len(outcomes)
    assert 1 <= len(moved) <= 2
    assert final.status is S.CANCELLED
    assert sum(1 for b in moved if b.status is S.CANCELLED) == 1


async def test_outcomes_recorded_while_paused_or_cancelled(store: Store) -> None:
    """Sends in flight at a pause may finish everyone (completed); at a cancel they are
    counted but the broadcast stays cancelled."""
    paused = await store.move_broadcast((await store.create_broadcast(to(1, 2))).id, Command.PAUSE)
    recorded = await store.record_results([sent(paused.id, 1)])
    assert recorded.finished == ()
    middle = await store.get_broadcast(paused.id)
    assert middle.status is S.PAUSED
    assert middle.started_at is not None
    recorded = await store.record_results([sent(paused.id, 2)])
    assert [b.status for b in recorded.finished] == [S.COMPLETED]

    cancelled = await _cancelled(store)
    recorded = await store.record_results([sent(cancelled.id, 1), sent(cancelled.id, 2)])
    assert recorded.finished == ()
    after = await store.get_broadcast(cancelled.id)
    assert after.status is S.CANCELLED
    assert (after.sent, after.pending) == (2, 0)
    assert await store.fail_broadcast(cancelled.id, "late content error") is None
    assert (await store.get_broadcast(cancelled.id)).status is S.CANCELLED


async def test_circuit_breaker_stops_a_paused_broadcast(store: Store) -> None:
    paused = await _paused_running(store)
    stopped = await store.fail_broadcast(paused.id, "bad content")
    assert stopped is not None
    assert stopped.status is S.FAILED


async def test_first_outcome_sets_started_at_once(store: Store) -> None:
    created = await store.create_broadcast(to(1, 2))
    assert created.started_at is None
    await store.record_results([sent(created.id, 1)])
    first = await store.get_broadcast(created.id)
    assert first.status is S.RUNNING
    assert first.started_at is not None
    await store.record_results([sent(created.id, 2)])
    assert (await store.get_broadcast(created.id)).started_at == first.started_at


async def test_list_broadcasts_newest_first_filtered_and_paged(store: Store) -> None:
    queued = [(await _queued(store)).id for _ in range(3)]
    paused = (await _paused_queued(store)).id
    scheduled = (await _scheduled(store)).id
    everyone = await store.list_broadcasts(statuses=(), before=None, limit=100)
    assert [b.id for b in everyone] == sorted([*queued, paused, scheduled], reverse=True)
    only = await store.list_broadcasts(statuses={S.PAUSED, S.SCHEDULED}, before=None, limit=100)
    assert [b.id for b in only] == sorted([paused, scheduled], reverse=True)
    first = await store.list_broadcasts(statuses={S.QUEUED}, before=None, limit=2)
    rest = await store.list_broadcasts(statuses={S.QUEUED}, before=first[-1].id, limit=2)
    assert [b.id for b in first + rest] == sorted(queued, reverse=True)


async def test_scheduled_broadcasts_wait_for_send_at(store: Store) -> None:
    now = datetime.now(UTC)
    later = await store.create_broadcast(to(1, send_at=now + timedelta(hours=1)))
    past = await store.create_broadcast(to(2, send_at=now - timedelta(hours=1)))
    assert later.status is S.SCHEDULED
    assert later.send_at == now + timedelta(hours=1)
    assert later.total == 1  # recipients stored at once
    assert past.status is S.QUEUED  # a past send_at means now
    assert await store.undispatched_broadcasts() == [past.id]  # never a scheduled one
    assert await store.due_broadcasts(now) == []
    assert await store.due_broadcasts(now + timedelta(hours=2)) == [later.id]
    await store.move_broadcast(later.id, Command.START)
    assert await store.due_broadcasts(now + timedelta(hours=2)) == []
    assert await store.undispatched_broadcasts() == [later.id, past.id]


async def test_a_generation_is_marked_dispatched_only_while_current(store: Store) -> None:
    paused = await _paused_running(store)
    resumed = await store.move_broadcast(paused.id, Command.RESUME)
    assert not await store.mark_generation_dispatched(resumed.id, None)  # an older generation
    assert await store.undispatched_broadcasts() == [resumed.id]
    assert await store.mark_generation_dispatched(resumed.id, resumed.resumed_at)
    assert await store.undispatched_broadcasts() == []
    old = Job(broadcast_id=resumed.id, user_ids=(2,))
    new = Job(
        broadcast_id=resumed.id,
        user_ids=(2,),
        generation=states.generation(resumed.resumed_at),
    )
    assert old.msg_id != new.msg_id
    assert Job.decode(new.encode()) == new


async def test_idempotency_key_is_unique_even_when_racing(store: Store) -> None:
    results = await asyncio.gather(
        *(
            store.create_broadcast(to(1, 2, key="same-key"), request_hash="h" * 64)
            for _ in range(4)
        ),
        return_exceptions=True,
    )
    created = [r for r in results if isinstance(r, Broadcast)]
    assert len(created) == 1, results
    assert all(isinstance(r, AlreadyExists) for r in results if not isinstance(r, Broadcast))
    found = await store.broadcast_by_idempotency_key("same-key")
    assert found is not None
    assert found[0].id == created[0].id
    assert found[0].idempotency_key == "same-key"
    assert found[1] == "h" * 64
    assert await store.broadcast_by_idempotency_key("other") is None


async def test_dispatcher_publishes_a_new_generation_after_resume(
    store: Store, queue: Queue
) -> None:
    """Jobs of a paused broadcast were taken and dropped; the resume publishes its pending
    recipients again, under new message ids JetStream's duplicate window lets through."""
    scheduled = await _scheduled(store)
    created = await store.create_broadcast(to(1, 2, 3))
    async with Dispatcher(store=store, queue=queue, batch_size=2) as dispatcher:
        await dispatcher.wait_idle()
        first = await queued_jobs(queue)
        assert {job.user_ids for job in first} == {(1, 2), (3,)}
        assert {job.generation for job in first} == {0}
        await store.record_results([sent(created.id, 1)])
        await store.move_broadcast(created.id, Command.PAUSE)
        dispatcher.dispatch(created.id)  # a paused (or scheduled) broadcast is not published
        dispatcher.dispatch(scheduled.id)
        await dispatcher.wait_idle()
        assert await queued_jobs(queue) == []
        resumed = await store.move_broadcast(created.id, Command.RESUME)
        assert resumed.status is S.RUNNING
        dispatcher.dispatch(created.id)
        await dispatcher.wait_idle()
        again = await queued_jobs(queue)
        assert {job.user_ids for job in again} == {(1, 2), (3,)}  # the same stable batches
        assert {job.generation for job in again} == {states.generation(resumed.resumed_at)}
        assert await store.undispatched_broadcasts() == []
        # The same generation dispatched again (a restart, the rescuer) is dropped.
        dispatcher.dispatch(created.id)
        await dispatcher.wait_idle()
        assert await queued_jobs(queue) == []


async def test_scheduler_starts_due_broadcasts_once(store: Store, queue: Queue) -> None:
    now = datetime.now(UTC)
    due = await store.create_broadcast(to(1, send_at=now + timedelta(hours=1)))
    dropped = await store.create_broadcast(to(2, send_at=now + timedelta(hours=1)))
    await store.move_broadcast(dropped.id, Command.CANCEL)
    waiting = await store.create_broadcast(to(3, send_at=now + timedelta(hours=5)))
    clock = [now]
    async with Dispatcher(store=store, queue=queue) as dispatcher:
        async with Scheduler(
            store=store, dispatcher=dispatcher, poll_interval=3600, clock=lambda: clock[0]
        ) as scheduler:
            assert await scheduler.start_due() == []
            clock[0] = now + timedelta(hours=2)
            assert await scheduler.start_due() == [due.id]
            assert await scheduler.start_due() == []
            await dispatcher.wait_idle()
        assert [job.user_ids for job in await queued_jobs(queue)] == [(1,)]
    assert (await store.get_broadcast(due.id)).status is S.QUEUED
    assert (await store.get_broadcast(dropped.id)).status is S.CANCELLED
    assert (await store.get_broadcast(waiting.id)).status is S.SCHEDULED
