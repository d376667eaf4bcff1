"""A watch *from now* counts each outcome once. An outcome recorded before the watch opened
but published after the events stream's end it starts from (a send in flight then) is in the
counters it starts from: its event's number (``ResultEvent.ordinal``, its place among the
broadcast's settled recipients) is within them, and the watch drops it — end to end over SSE,
and in the core's shared steps, where such a watcher still shares the updates of the batches
it drops nothing of. The store numbers a broadcast's outcomes 1, 2, ... in the order of the
transactions that count them, each once, on every backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.event_batches import Batches, first, watches
from tests.fixtures.held_calls import HoldingSimulator
from tests.fixtures.stack import Stack, open_backend, start_stack
from tests.fixtures.statements import executed
from tests.test_list_events import open_sse
from tests.test_reports import send
from tests.test_store import sent
from tests.test_variant_counts import with_variants
from tgbroadcast.core.domain.model import (
    Broadcast,
    BroadcastStatus,
    Content,
    DeliveryResult,
    DeliveryState,
)
from tgbroadcast.core.queue import Event, ResultEvent
from tgbroadcast.core.queue.jetstream import Queue
from tgbroadcast.core.queue.watching import Sequenced
from tgbroadcast.core.service import cursors
from tgbroadcast.core.service.watch_updates import WatchUpdate
from tgbroadcast.core.store import Store

NOW = datetime(2026, 12, 7, tzinfo=UTC)


async def test_outcomes_are_numbered_in_the_order_they_are_counted(
    store: Store, database_url: str
) -> None:
    """Two stores record the outcomes of two broadcasts with variants at once, in calls that
    mix them and repeat some: each recorded outcome gets one number, a broadcast's numbers are
    1 to its recipients, and those of one call are consecutive; the counts kept per variant
    are each broadcast's."""
    first = await store.create_broadcast(with_variants(*range(1, 61)))
    second = await store.create_broadcast(with_variants(*range(1, 21)))

    def of(broadcast_id: int, user_id: int) -> DeliveryResult:
        return replace(sent(broadcast_id, user_id), variant="ab"[user_id % 2])

    calls = [
        [of(first.id, u) for u in range(n, n + 6)] + [of(second.id, i + 1)]
        for i, n in enumerate(range(1, 61, 3))  # most of first's recipients in two calls
    ]
    async with Store.open(database_url) as other:
        recorded = await asyncio.gather(
            *(
                (store if i % 2 else other).record_results(results)
                for i, results in enumerate(calls)
            )
        )
    numbered: dict[int, dict[int, int]] = {first.id: {}, second.id: {}}
    for call in recorded:
        assert len(call.ordinals) == len(call.recorded)
        ranges: dict[int, list[int]] = {}
        for result, ordinal in zip(call.recorded, call.ordinals, strict=True):
            assert result.user_id not in numbered[result.broadcast_id]  # counted once
            numbered[result.broadcast_id][result.user_id] = ordinal
            ranges.setdefault(result.broadcast_id, []).append(ordinal)
        for ordinals in ranges.values():
            assert sorted(ordinals) == list(range(min(ordinals), max(ordinals) + 1))
    assert sorted(numbered[first.id].values()) == list(range(1, 61))
    assert sorted(numbered[second.id].values()) == list(range(1, 21))
    for broadcast, half in ((first, 30), (second, 10)):
        with executed(lambda statement: "deliveries" in statement) as read:
            counts = await store.variant_counts(broadcast.id)
        assert counts == {"a": {DeliveryState.SENT: half}, "b": {DeliveryState.SENT: half}}
        assert read == []  # the kept counts


def outcome(seq: int, user_id: int, ordinal: int) -> Sequenced:
    result = DeliveryResult(
        broadcast_id=7, user_id=user_id, state=DeliveryState.SENT, finished_at=NOW
    )
    return Sequenced(seq, ResultEvent(result=result, ordinal=ordinal))


async def test_a_watch_from_now_drops_the_outcomes_its_counters_hold() -> None:
    broadcast = Broadcast(
        id=7,
        content=Content(message="hi"),
        status=BroadcastStatus.RUNNING,
        total=10,
        sent=3,
        failed=0,
        created_at=NOW,
    )
    # Opened at the stream's end 5 with three outcomes counted: outcome 3's event was
    # published after it (in flight), outcome 6's came before outcome 3's, and one event has
    # no number (re-published from the database: counted).
    events = Batches(
        [outcome(5, 14, 4), outcome(6, 13, 3)],
        [outcome(7, 15, 0), outcome(8, 16, 5)],
    )
    watch = watches(events, broadcast)

    async def updates(after: cursors.Cursor, batches: int) -> list[WatchUpdate]:
        return [update for batch in await first(watch(after), batches) for update in batch]

    # Its sent and failed are those of the outcome counts (read last, together).
    counted = {DeliveryState.SENT: 2, DeliveryState.BLOCKED: 2}
    assert str(cursors.Cursor.now(5, broadcast, counted)) == "s4.2.2~4"
    now = cursors.Cursor.now(5, broadcast, {DeliveryState.SENT: 3})
    assert (str(now), now.floor) == ("s4.3.0~3", cursors.Floor(3))
    assert cursors.Cursor.parse(str(now)) == now  # a resumed watch keeps the floor
    assert cursors.Cursor.parse("s4.3.0~") is None
    # No watch spells a floor past its counters, nor one on a replay's cursor.
    assert cursors.Cursor.parse("s4.3.0~4") is None
    assert cursors.Cursor.parse("u4.3.0~3") is None
    from_now = await updates(now, 2)
    assert [(u.result.user_id if u.result else None, u.sent, u.cursor) for u in from_now] == [
        (14, 4, "s5.4.0"),
        (15, 5, "s7.5.0"),
        (16, 6, "s8.6.0"),
    ]
    # A watcher resumed at the same place from a cursor (no floor) counts the outcome the
    # watch from now dropped: its counters are its cursor's, and it makes its own updates.
    at_start = cursors.Cursor.parse("s4.3.0")
    assert at_start is not None
    resumed = await updates(at_start, 1)
    assert [(u.result.user_id if u.result else None, u.sent) for u in resumed] == [
        (14, 4),
        (13, 5),
    ]
    assert resumed[0] is not from_now[0]
    # One resumed from the watch's own cursor drops it again: the cursor carries the floor.
    again = await updates(replace(at_start, floor=cursors.Floor(3)), 1)
    assert [(u.result.user_id if u.result else None, u.sent) for u in again] == [(14, 4)]
    # The batch it drops nothing of, it shares with a watcher at the same place.
    at_seven = cursors.Cursor.parse("s6.4.0")
    assert at_seven is not None
    plain, floored = [
        await updates(cursor, 1) for cursor in (at_seven, replace(at_seven, floor=cursors.Floor(3)))
    ]
    assert all(a is b for a, b in zip(plain, floored, strict=True))
    assert plain == from_now[1:]
    # One whose floor reaches an outcome of the batch makes its own, dropping it.
    high = await updates(replace(at_seven, floor=cursors.Floor(5)), 1)
    assert [(u.result.user_id if u.result else None, u.sent) for u in high] == [(15, 5)]


class HeldPublish:
    """The workers' first publish of outcomes (of ``kind``), held (after its transaction
    committed) until released."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, kind: type[Event] = ResultEvent) -> None:
        self.events: list[Event] = []
        self.holding = asyncio.Event()
        self.released = asyncio.Event()
        publish_events = Queue.publish_events

        async def held(queue: Queue, events: Sequence[Event]) -> None:
            if not self.holding.is_set() and any(isinstance(e, kind) for e in events):
                self.events = list(events)
                self.holding.set()
                await self.released.wait()
            await publish_events(queue, events)

        monkeypatch.setattr(Queue, "publish_events", held)


@pytest.fixture(name="held_stack")
async def held_stack(tmp_path: Path) -> AsyncIterator[tuple[Stack, HoldingSimulator]]:
    async with (
        HoldingSimulator() as simulator,
        open_backend("sqlite", tmp_path) as backend,
        start_stack(backend, simulator) as stack,
    ):
        yield stack, simulator


@pytest.mark.parametrize("reconnect", [False, True], ids=["open", "reconnected"])
async def test_an_outcome_in_flight_when_a_stream_opens_from_now_is_counted_once(
    held_stack: tuple[Stack, HoldingSimulator], monkeypatch: pytest.MonkeyPatch, reconnect: bool
) -> None:
    """Reconnected: the stream goes before the outcome's event comes, and one resumed with
    ``Last-Event-ID`` (the opening's id, which carries its counters) still leaves it out."""
    stack, simulator = held_stack
    publish = HeldPublish(monkeypatch)
    sends = simulator.hold("sendMessage", after=3)
    recipients = [61, 62, 63, 64, 65, 66]
    try:
        broadcast_id = await send(stack, recipients)
        await publish.holding.wait()  # outcomes committed, their events not yet published
        await sends.holding()
        early = {e.result.user_id for e in publish.events if isinstance(e, ResultEvent)}
        path = f"/v1/broadcasts/{broadcast_id}/events"
        async with AsyncExitStack() as exits:
            async with AsyncExitStack() as first_stream:
                sse = await open_sse(
                    first_stream if reconnect else exits, stack, f"{path}?from=now"
                )
                event, data, opening = await sse.next()
            assert event == "status"
            assert opening is not None
            counted = data["progress"]["sent"]
            assert counted == len(early)  # the recorder waits on the held publish
            assert data["outcome_counts"] == {"sent": counted}  # what the counters hold
            assert opening.endswith(f"~{counted}")
            publish.released.set()
            sends.release()
            if reconnect:
                sse = await open_sse(exits, stack, path, headers={"Last-Event-ID": opening})
            streamed: list[dict[str, Any]] = []
            ids: list[str] = []
            while (next_event := await sse.next())[0] != "end":
                if next_event[0] == "result":
                    streamed.append(next_event[1])
                    ids.append(next_event[2] or "")
            end = next_event[1]
    finally:
        publish.released.set()
        sends.release()
    assert all(cursor.endswith(f"~{counted}") for cursor in ids)
    assert early.isdisjoint(r["user_id"] for r in streamed)
    assert sorted(early | {r["user_id"] for r in streamed}) == recipients
    assert [r["progress"]["sent"] for r in streamed] == list(
        range(counted + 1, len(recipients) + 1)
    )
    assert (end["progress"]["sent"], end["progress"]["status"]) == (len(recipients), "completed")
