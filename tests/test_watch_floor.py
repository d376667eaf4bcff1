"""A watch *from now*'s cursors carry its floor over gRPC: every message's cursor (one outcome
each or batched) ends with the counters the watch opened with, the floor the core tells the
transport (a watch from now's, or the one of the cursor it resumed after); the messages the
watchers share stay without it.
(The SSE side, and what the floor does on a reconnect, are end to end in
tests/test_watch_from_now.py.)"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from tgbroadcast.core.domain.model import BroadcastStatus, DeliveryResult, DeliveryState
from tgbroadcast.core.service.broadcasting import BroadcastingService
from tgbroadcast.core.service.cursors import Floor
from tgbroadcast.core.service.watch_updates import STATUS_KIND, WatchUpdate
from tgbroadcast.server.grpc import messages
from tgbroadcast.server.grpc.watch import watch_broadcast
from tgbroadcast.server.streams import Watchers

AT = datetime(2026, 12, 7, tzinfo=UTC)


def outcome(user_id: int, seq: int, sent: int) -> WatchUpdate:
    result = DeliveryResult(
        broadcast_id=1, user_id=user_id, state=DeliveryState.SENT, finished_at=AT
    )
    running = BroadcastStatus.RUNNING
    return WatchUpdate(
        result=result, status=running, total=10, sent=sent, failed=0, position="s", seq=seq
    )


OPENING = WatchUpdate(
    result=None,
    status=BroadcastStatus.RUNNING,
    total=10,
    sent=3,
    failed=0,
    position="s",
    seq=4,
    kind=STATUS_KIND,
    floor=Floor(3),
)
CLOSING = WatchUpdate(
    result=None, status=BroadcastStatus.COMPLETED, total=10, sent=10, failed=0, position="s", seq=9
)


class _Core:
    """The core's watch, standing in: the floor it tells (as the core does: before the
    first update), then these batches."""

    def __init__(self, batches: Sequence[list[WatchUpdate]], floor: Floor) -> None:
        self.batches = batches
        self.floor = floor

    async def watch(
        self,
        broadcast_id: int,
        *,
        visible: object,
        after: str,
        from_now: bool,
        on_floor: Callable[[Floor], None],
        by_kind: bool,
    ) -> AsyncGenerator[list[WatchUpdate], None]:
        if self.floor:
            on_floor(self.floor)
        for batch in self.batches:
            yield batch


class _Context:
    async def send_initial_metadata(self, metadata: object) -> None:
        pass


async def cursors(
    batches: Sequence[list[WatchUpdate]], *, floor: Floor, after: str = "", most: int = 0
) -> list[str]:
    stream = watch_broadcast(
        cast(BroadcastingService, _Core(batches, floor)),
        Watchers(10),
        1,
        cast(Any, _Context()),
        after=after,
        from_now=not after,
        max_batch=most,
    )
    return [message.cursor async for message in stream]


@pytest.mark.parametrize("most", [0, 10])
async def test_every_cursor_of_a_watch_from_now_carries_its_opening_floor(most: int) -> None:
    later = [outcome(14, 5, 4), outcome(15, 7, 5)]
    found = await cursors([[OPENING], later, [CLOSING]], floor=Floor(3), most=most)
    expected = ["s5.4.0~3", "s7.5.0~3"] if not most else ["s7.5.0~3"]
    assert found == [*expected, "s9.10.0~3"]


async def test_a_watch_resumed_after_a_floored_cursor_keeps_the_floor() -> None:
    found = await cursors([[outcome(15, 7, 5)], [CLOSING]], floor=Floor(3), after="s5.4.0~3")
    assert found == ["s7.5.0~3", "s9.10.0~3"]


async def test_a_watch_without_a_floor_spells_none_and_shares_its_batches() -> None:
    later = [outcome(14, 5, 4), outcome(15, 7, 5)]
    found = await cursors([later, [CLOSING]], floor=Floor(), after="s4.3.0")
    assert found == ["s5.4.0", "s7.5.0", "s9.10.0"]
    shared = messages.watch_batch(later)
    assert messages.watch_batch(later) is shared  # built once for every watcher
    floored = messages.watch_batch(later, Floor(3))
    assert (floored.cursor, shared.cursor) == ("s7.5.0~3", "s7.5.0")
    assert messages.watch_batch(later, Floor(3)) is floored  # and once for those with one floor
    assert list(floored.results) == list(shared.results)
