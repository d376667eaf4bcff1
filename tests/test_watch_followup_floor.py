"""A watch *from now* counts each recall and edit outcome once, as it does deliveries: the
outcomes are numbered by their counters as they are recorded, and the watch drops those within
the counters it opened with — also when resumed from one of its cursors, which carry that
floor (``~<settled>.<recalled>[.<edited>.<version>]``)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from tests.fixtures.event_batches import Batches, first, watches
from tests.fixtures.held_calls import HoldingSimulator
from tests.fixtures.stack import Stack
from tests.test_list_events import open_sse
from tests.test_recall import rest, send_and_finish
from tests.test_watch_from_now import HeldPublish
from tests.test_watch_from_now import held_stack as held_stack_fixture  # noqa: F401 -- fixture
from tgbroadcast.core.domain.model import (
    Broadcast,
    BroadcastStatus,
    Content,
    DeliveryResult,
    DeliveryState,
    EditOutcome,
    RecallOutcome,
)
from tgbroadcast.core.metrics import Metrics
from tgbroadcast.core.queue import EditEvent, RecallEvent, decode_event, encode_event
from tgbroadcast.core.queue.jetstream import Queue
from tgbroadcast.core.queue.watching import Sequenced
from tgbroadcast.core.service.bot_access import KnownBots
from tgbroadcast.core.service.broadcasting import BroadcastingService
from tgbroadcast.core.service.cursors import NO_FLOOR, Cursor, Floor
from tgbroadcast.core.service.dispatch import Dispatcher
from tgbroadcast.core.service.watch_updates import WatchUpdate
from tgbroadcast.core.store import Store

NOW = datetime(2026, 12, 7, tzinfo=UTC)
SENT = DeliveryResult(broadcast_id=7, user_id=0, state=DeliveryState.SENT, finished_at=NOW)
SIX_SENT = Broadcast(
    id=7,
    content=Content(message="hi"),
    status=BroadcastStatus.RECALLING,
    total=10,
    sent=6,
    failed=0,
    recalled=2,
    created_at=NOW,
)
"""Broadcast 7: 6 of its 10 recipients sent, 2 of them recalled so far."""


def recall(seq: int, user_id: int, ordinal: int) -> Sequenced:
    result = replace(SENT, user_id=user_id, recall=RecallOutcome.DELETED)
    return Sequenced(seq, RecallEvent(result=result, ordinal=ordinal))


def edit(seq: int, user_id: int, ordinal: int, version: int = 2) -> Sequenced:
    result = replace(SENT, user_id=user_id, edit=EditOutcome.EDITED, content_version=version)
    return Sequenced(seq, EditEvent(result=result, ordinal=ordinal))


def test_recall_and_edit_numbers_travel_with_their_events() -> None:
    for event in (recall(1, 5, 3).event, edit(1, 5, 2).event):
        assert b'"ordinal":' in encode_event(event)
        assert decode_event(encode_event(event)) == event
    unnumbered = RecallEvent(result=replace(SENT, recall=RecallOutcome.DELETED))
    assert b"ordinal" not in encode_event(unnumbered)  # re-published: no number
    assert decode_event(encode_event(unnumbered)) == unnumbered


def test_a_floor_with_recall_and_edit_counters_is_spelled_and_read_back() -> None:
    broadcast = SIX_SENT
    now = Cursor.now(5, broadcast, {DeliveryState.SENT: 6})
    assert (str(now), now.floor) == ("s4.6.0.2~6.2", Floor(6, 2))
    assert Cursor.parse(str(now)) == now
    edited = Cursor.now(5, replace(broadcast, edited=3, content_version=2), {DeliveryState.SENT: 6})
    assert str(edited) == "s4.6.0.2.3.2~6.2.3.2"
    assert Cursor.parse(str(edited)) == edited
    assert Cursor.parse("s4.6.0.2.5.2~6.2.3.2") is not None  # the edit's counter went on
    # Before its first outcome, an edit's version is no part of the floor.
    unedited = Cursor.now(5, replace(broadcast, content_version=3), {DeliveryState.SENT: 6})
    assert (str(unedited.floor), Cursor.parse(str(unedited))) == ("6.2", unedited)
    assert Cursor.parse("s4.6.0.2.0.3~6.2.3.2") is not None  # a newer edit counts afresh
    # No watch spells a floor past its counters.
    for spelled in (
        "s4.6.0.2~6.3",  # more recalls than the cursor counts
        "s4.6.0.2.2.2~6.2.3.2",  # more outcomes of the cursor's edit
        "s4.6.0.2.3.2~6.2.3.3",  # an edit newer than the cursor's
        "s4.6.0~0.1",  # recalls without a delivery
    ):
        assert Cursor.parse(spelled) is None, spelled


def test_a_floor_is_the_sum_of_the_counts_by_kind_read_after_the_broadcast() -> None:
    """The counts by kind are the opening's breakdown: its floor is what they hold, not the
    broadcast's counters read before them (outcomes recorded in between are in both)."""
    broadcast = SIX_SENT
    now = Cursor.now(5, broadcast, {DeliveryState.SENT: 6}, {RecallOutcome.DELETED: 3}, {})
    assert (str(now), now.floor) == ("s4.6.0.3~6.3", Floor(6, 3))


class EditBegins:
    """A store whose broadcast's edit to version 3 begins right after its version 2's
    outcomes are counted (4 of them, late ones of version 2 among them; version 3 has one)."""

    def __init__(self) -> None:
        self.version = 2

    async def get_broadcast(self, broadcast_id: int) -> Broadcast:
        return replace(
            SIX_SENT,
            status=BroadcastStatus.COMPLETED,
            recalled=0,
            content_version=self.version,
            editing=True,
            edit_at=NOW,
        )

    async def outcome_counts(self, broadcast_id: int) -> dict[DeliveryState, int]:
        return {DeliveryState.SENT: 6}

    async def edit_counts(self, broadcast_id: int, version: int) -> dict[EditOutcome, int]:
        counted = {2: 4, 3: 1}[version]
        self.version = 3
        return {EditOutcome.EDITED: counted}


class StreamEnd:
    async def events_end(self) -> int:
        return 5


async def test_an_edit_beginning_as_a_watch_opens_from_now_is_counted_by_its_version() -> None:
    """The opening's edit counts are those of the version its cursor names: counted again
    when a newer edit began while they were read (the counter counts the latest alone)."""
    service = BroadcastingService(
        store=cast(Store, EditBegins()),
        queue=cast(Queue, StreamEnd()),
        dispatcher=cast(Dispatcher, None),
        metrics=cast(Metrics, None),
        bots=cast(KnownBots, None),
        max_user_ids=10,
    )
    floors: list[Floor] = []
    opening = (await first(service.watch(7, from_now=True, on_floor=floors.append), 1))[0][0]
    assert (opening.edit_counts, opening.version, opening.edited) == (
        {EditOutcome.EDITED: 1},
        3,
        1,
    )
    assert floors == [Floor(6, 0, 1, 3)]


async def test_a_watch_from_now_drops_the_recall_and_edit_outcomes_its_counters_hold() -> None:
    broadcast = replace(
        SIX_SENT, status=BroadcastStatus.RUNNING, edited=1, content_version=2, editing=True
    )
    # Opened at the stream's end 5 with two recalls and one edit counted: recall 2's and
    # edit 1's events were published after it (in flight); version 3's first edit is new.
    events = Batches(
        [recall(5, 11, 3), recall(6, 12, 2), edit(7, 13, 1), edit(8, 14, 2), edit(9, 15, 1, 3)],
    )
    watch = watches(events, broadcast)

    async def updates(after: Cursor) -> list[WatchUpdate]:
        return (await first(watch(after), 1))[0]

    now = Cursor.now(5, broadcast, {DeliveryState.SENT: 6})
    assert now.floor == Floor(6, 2, 1, 2)
    # A watcher at the same place without the floor counts them all, first: what it makes
    # is kept for the watchers at its place, but not given to one whose floor reaches them.
    plain = await updates(replace(now, floor=NO_FLOOR))
    assert [(u.recalled, u.edited, u.version) for u in plain] == [
        (3, 1, 2),
        (4, 1, 2),
        (4, 2, 2),
        (4, 3, 2),
        (4, 1, 3),
    ]
    from_now = await updates(now)
    assert [(u.kind, u.result.user_id if u.result else 0) for u in from_now] == [
        ("recall", 11),
        ("edit", 14),
        ("edit", 15),
    ]
    assert [(u.recalled, u.edited, u.version) for u in from_now] == [
        (3, 1, 2),
        (3, 2, 2),
        (3, 1, 3),
    ]
    # Resumed from the watch's opening cursor: the same, the cursor carries the floor.
    resumed = Cursor.parse(str(now))
    assert resumed is not None
    assert [u.result for u in await updates(resumed)] == [u.result for u in from_now]


@pytest.mark.parametrize(
    ("kind", "method", "body"),
    [("recall", "deleteMessage", None), ("edit", "editMessageText", {"message": "new"})],
)
async def test_an_outcome_in_flight_when_a_stream_opens_from_now_is_counted_once(
    held_stack: tuple[Stack, HoldingSimulator],
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    method: str,
    body: dict[str, Any] | None,
) -> None:
    """Over SSE, resumed with ``Last-Event-ID`` from the opening: the recall (edit) recorded
    before the stream opened, its event published only after, is in the opening's counters
    and never streamed; every id streamed carries the floor."""
    stack, simulator = held_stack
    recipients = [71, 72, 73, 74]
    broadcast_id = await send_and_finish(stack, {"message": "hi", "user_ids": recipients})
    held: type[RecallEvent | EditEvent] = RecallEvent if kind == "recall" else EditEvent
    publish = HeldPublish(monkeypatch, held)
    calls = simulator.hold(method, after=1)
    counter, outcome = ("recalled", "deleted") if kind == "recall" else ("edited", "edited")
    try:
        code, _ = await rest(stack, "POST", f"/v1/broadcasts/{broadcast_id}/{kind}", body)
        assert code == 200
        await publish.holding.wait()  # one outcome committed, its event not yet published
        early = {e.result.user_id for e in publish.events if isinstance(e, held)}
        path = f"/v1/broadcasts/{broadcast_id}/events"
        async with AsyncExitStack() as exits:
            async with AsyncExitStack() as first_stream:
                sse = await open_sse(first_stream, stack, f"{path}?from=now")
                event, data, opening = await sse.next()
            assert (event, opening is not None) == ("status", True)
            assert opening is not None
            counted = data["progress"][counter]
            assert counted == len(early)
            assert data[f"{kind}_counts"] == {outcome: counted}
            floor = f"~4.0.{counted}.2" if kind == "edit" else f"~4.{counted}"
            assert opening.endswith(floor)
            publish.released.set()
            calls.release()
            sse = await open_sse(exits, stack, path, headers={"Last-Event-ID": opening})
            streamed: list[dict[str, Any]] = []
            ids: list[str] = []
            while (next_event := await sse.next())[0] != "end":
                if next_event[0] == kind:
                    streamed.append(next_event[1])
                    ids.append(next_event[2] or "")
            end = next_event[1]
    finally:
        publish.released.set()
        calls.release()
    assert all(cursor.endswith(floor) for cursor in ids), ids
    assert early.isdisjoint(r["user_id"] for r in streamed)
    assert sorted(early | {r["user_id"] for r in streamed}) == recipients
    assert [r["progress"][counter] for r in streamed] == list(
        range(counted + 1, len(recipients) + 1)
    )
    assert end["progress"][counter] == len(recipients)
