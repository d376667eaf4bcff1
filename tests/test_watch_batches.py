"""Batched watching: ``WatchBroadcast`` with ``max_batch`` carries the same outcomes, in the
same order, with the same counters and cursors as one outcome per message, several to a
message; and the watchers of a broadcast at the same place share the updates the core makes
of its events (core/service/watching.py, ``SharedSteps``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import grpc
import pytest

from tests.fixtures.event_batches import Batches, first, watches
from tests.fixtures.grpc_details import bad_request
from tests.fixtures.held_calls import HoldingSimulator
from tests.fixtures.stack import Backend, Stack, on_sqlite, start_stack
from tests.test_reports import send
from tgbroadcast.core.domain.model import (
    Broadcast,
    BroadcastStatus,
    Content,
    DeliveryResult,
    DeliveryState,
)
from tgbroadcast.core.queue import ResultEvent, StatusEvent
from tgbroadcast.core.queue.watching import Sequenced
from tgbroadcast.core.service import cursors
from tgbroadcast.v1 import broadcast_pb2 as pb

RECIPIENTS = list(range(1, 13))
NOW = datetime(2026, 12, 6, tzinfo=UTC)
Message = pb.WatchBroadcastResponse


async def read_until(call: Any, messages: list[Message], outcomes: int) -> None:
    """Read ``call`` into ``messages`` until they carry ``outcomes`` outcomes (or it ends)."""
    while sum(len(m.results) + m.HasField("result") for m in messages) < outcomes:
        message = await call.read()
        if message is grpc.aio.EOF:
            return
        messages.append(message)


def flattened(messages: list[Message]) -> list[int]:
    return [r.user_id for m in messages for r in m.results]


@on_sqlite
async def test_a_batched_watch_is_the_same_stream_in_fewer_messages(backend: Backend) -> None:
    async with (
        HoldingSimulator() as simulator,
        start_stack(backend, simulator, {"TGB_TELEGRAM_RATE_LIMIT": "20"}) as stack,
        stack.stub() as stub,
    ):
        # Held after four sends: both watches follow the running broadcast live.
        held = simulator.hold("sendMessage", after=4)
        try:
            broadcast_id = await send(stack, RECIPIENTS)
            batched_call = stub.WatchBroadcast(
                pb.WatchBroadcastRequest(broadcast_id=broadcast_id, max_batch=5),
                metadata=stack.metadata,
            )
            single_call = stub.WatchBroadcast(
                pb.WatchBroadcastRequest(broadcast_id=broadcast_id), metadata=stack.metadata
            )
            batched: list[Message] = []
            single: list[Message] = []
            await read_until(batched_call, batched, 4)
            await read_until(single_call, single, 4)
        finally:
            held.release()
        await read_until(batched_call, batched, len(RECIPIENTS) + 1)
        await read_until(single_call, single, len(RECIPIENTS) + 1)

        *outcomes, closing = single
        *batches, batched_closing = batched
        assert flattened(batches) == [m.result.user_id for m in outcomes]
        assert sorted(flattened(batches)) == RECIPIENTS
        assert batched_closing == closing
        assert not closing.HasField("result")
        assert not closing.results
        at = 0
        for message in batches:
            assert not message.HasField("result")
            assert 1 <= len(message.results) <= 5
            at += len(message.results)
            # The counters and cursor of its last outcome, as one per message has them.
            assert message.progress == outcomes[at - 1].progress
            assert message.cursor == outcomes[at - 1].cursor
            carried = [m.result for m in outcomes[at - len(message.results) : at]]
            assert list(message.results) == carried

        # A batch's cursor resumes (on the events stream) with the outcomes that followed it.
        middle = len(batches) // 2
        rest = [
            m
            async for m in stub.WatchBroadcast(
                pb.WatchBroadcastRequest(
                    broadcast_id=broadcast_id, max_batch=5, after=batches[middle].cursor
                ),
                metadata=stack.metadata,
            )
        ]
        assert flattened(rest[:-1]) == flattened(batches[middle + 1 :])
        assert rest[-1] == closing


@on_sqlite
async def test_a_finished_broadcast_is_replayed_in_batches_and_resumed_from_one(
    stack: Stack,
) -> None:
    broadcast_id = await send(stack, RECIPIENTS)
    async with stack.stub() as stub:
        # The live stream to its end: the broadcast has finished after it.
        [
            m
            async for m in stub.WatchBroadcast(
                pb.WatchBroadcastRequest(broadcast_id=broadcast_id), metadata=stack.metadata
            )
        ]
        replay = [
            m
            async for m in stub.WatchBroadcast(
                pb.WatchBroadcastRequest(broadcast_id=broadcast_id, max_batch=5),
                metadata=stack.metadata,
            )
        ]
        *batches, closing = replay
        # A replay's page comes at once: batches as full as ``max_batch`` allows.
        assert [len(m.results) for m in batches] == [5, 5, 2]
        assert flattened(batches) == RECIPIENTS  # by user id
        assert closing.progress.sent == len(RECIPIENTS)
        assert not closing.results
        assert [m.progress.sent for m in batches] == [5, 10, 12]
        rest = [
            m
            async for m in stub.WatchBroadcast(
                pb.WatchBroadcastRequest(
                    broadcast_id=broadcast_id, max_batch=5, after=batches[0].cursor
                ),
                metadata=stack.metadata,
            )
        ]
        # A reconnect that keeps from_now resumes after its cursor all the same.
        kept = [
            m
            async for m in stub.WatchBroadcast(
                pb.WatchBroadcastRequest(
                    broadcast_id=broadcast_id, max_batch=5, after=batches[0].cursor, from_now=True
                ),
                metadata=stack.metadata,
            )
        ]
        assert kept == rest
        # A cursor's counters are not taken on trust: kept from another broadcast, or made
        # up, the replay after its recipient counts from SQL.
        forged = [
            m
            async for m in stub.WatchBroadcast(
                pb.WatchBroadcastRequest(
                    broadcast_id=broadcast_id, max_batch=5, after=f"u{RECIPIENTS[4]}.9.2.3"
                ),
                metadata=stack.metadata,
            )
        ]
    assert flattened(rest[:-1]) == RECIPIENTS[5:]
    assert rest[0].progress.sent == 10
    assert flattened(forged[:-1]) == RECIPIENTS[5:]
    assert [m.progress for m in forged] == [m.progress for m in rest]
    assert forged[-1].progress.pending == 0
    assert (forged[-1].progress.sent, forged[-1].progress.failed) == (len(RECIPIENTS), 0)


@on_sqlite
@pytest.mark.parametrize("max_batch", [-1, 1001])
async def test_max_batch_out_of_range_is_invalid(stack: Stack, max_batch: int) -> None:
    broadcast_id = await send(stack, [1])
    async with stack.stub() as stub:
        call = stub.WatchBroadcast(
            pb.WatchBroadcastRequest(broadcast_id=broadcast_id, max_batch=max_batch),
            metadata=stack.metadata,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            [m async for m in call]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request(caught.value) == {
        "max_batch": "must be from 0 to 1000 (0: one outcome per message)"
    }


def outcome(seq: int, user_id: int, state: DeliveryState = DeliveryState.SENT) -> Sequenced:
    result = DeliveryResult(broadcast_id=7, user_id=user_id, state=state, finished_at=NOW)
    return Sequenced(seq, ResultEvent(result=result))


async def test_watchers_at_the_same_place_share_the_updates_of_the_same_events() -> None:
    broadcast = Broadcast(
        id=7,
        content=Content(message="hi"),
        status=BroadcastStatus.RUNNING,
        total=6,
        sent=0,
        failed=0,
        created_at=datetime(2026, 12, 6, tzinfo=UTC),
    )
    events = Batches(
        [outcome(1, 11), outcome(2, 12, DeliveryState.BLOCKED)],
        [
            Sequenced(3, StatusEvent(broadcast_id=7, status=BroadcastStatus.PAUSED, at=NOW)),
            outcome(4, 13),
        ],
    )
    watch = watches(events, broadcast)
    one, two = await first(watch(None), 2), await first(watch(None), 2)
    alone = await first(watches(events, broadcast)(None), 2)
    for mine, theirs in zip(one, two, strict=True):
        assert all(a is b for a, b in zip(mine, theirs, strict=True))  # the very same updates
    assert one == alone  # and what a watcher alone makes of them
    flat = [update for batch in one for update in batch]
    assert [(u.kind, u.sent, u.failed, u.status, u.cursor) for u in flat] == [
        ("result", 1, 0, BroadcastStatus.RUNNING, "s1.1.0"),
        ("result", 1, 1, BroadcastStatus.RUNNING, "s2.1.1"),
        ("status", 1, 1, BroadcastStatus.PAUSED, "s3.1.1"),
        ("result", 2, 1, BroadcastStatus.PAUSED, "s4.2.1"),
    ]
    # A watcher resumed where the others were before a batch takes their updates of it; one
    # resumed elsewhere makes its own, its counters going on from its cursor.
    same_place = await first(watch(cursors.Cursor.parse("s2.1.1")), 1)
    assert all(a is b for a, b in zip(same_place[0], one[1], strict=True))
    elsewhere = await first(watch(cursors.Cursor.parse("s1.1.0")), 1)
    assert elsewhere[0] == [one[0][1]]
    assert elsewhere[0][0] is not one[0][1]
