"""A replay's cursor resumed after the broadcast began an edit (or a recall): the watch goes on
on the events stream from its start, but the outcomes the replay showed — every delivery of
the recipients up to its user id, their edits up to its version, their recalls once recalled
— are not streamed again, and every cursor after it carries that (``^<through>.<version>
.<recalled>``), so a resume from one of them drops them too."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tests.fixtures.event_batches import Batches, first, watches
from tests.fixtures.stack import Stack
from tests.test_recall import rest, send_and_finish
from tests.test_watch_followup_floor import NOW, SENT, edit, recall
from tests.test_watch_resume import events, first_events
from tgbroadcast.core.domain.model import (
    Broadcast,
    BroadcastStatus,
    Content,
    DeliveryResult,
    DeliveryState,
    EditOutcome,
    RecallOutcome,
)
from tgbroadcast.core.queue import ResultEvent
from tgbroadcast.core.queue.watching import Sequenced
from tgbroadcast.core.service.cursors import Cursor, Replayed
from tgbroadcast.core.service.watch_updates import WatchUpdate
from tgbroadcast.core.store.results import ResultCounts

EDITING = Broadcast(
    id=7,
    content=Content(message="v3"),
    status=BroadcastStatus.COMPLETED,
    total=4,
    sent=3,
    failed=1,
    created_at=NOW,
    content_version=3,
    editing=True,
)
"""Broadcast 7: users 1, 3, 4 sent, 2 failed; edited to version 2, now editing to 3."""


def result(seq: int, user_id: int, ordinal: int) -> Sequenced:
    state = DeliveryState.FAILED if user_id == 2 else DeliveryState.SENT
    return Sequenced(
        seq, ResultEvent(result=replace(SENT, user_id=user_id, state=state), ordinal=ordinal)
    )


STREAM = Batches(
    [
        result(1, 3, 1),
        result(2, 1, 2),
        result(3, 2, 3),
        result(4, 4, 4),
        edit(6, 3, 1, 2),
        edit(7, 1, 2, 2),
        edit(8, 4, 3, 2),
        edit(10, 1, 1, 3),
        edit(11, 3, 2, 3),
    ]
)


class Counted:
    """The store's counts of a broadcast's recipients up to a user id, as a replay read them."""

    def __init__(self, **through: ResultCounts) -> None:
        self.through = {int(user.removeprefix("u")): counts for user, counts in through.items()}

    async def results_through(self, broadcast_id: int, user_id: int, *, version: int) -> Any:
        return self.through[user_id]


def seen(batch: list[WatchUpdate]) -> list[tuple[str, int, str]]:
    return [(u.kind, u.result.user_id if u.result else 0, u.cursor) for u in batch]


async def test_a_replay_resumed_during_an_edit_streams_only_what_it_did_not_show() -> None:
    watch = watches(STREAM, EDITING, Counted(u2=ResultCounts(sent=1, failed=1, edited=1)))
    # A replay showed users 1 (sent, edited to version 2) and 2 (failed); then the edit to
    # version 3 began, and the replay is resumed after user 2.
    after_user_2 = Cursor.parse("u2.1.1.0.1.2")
    assert after_user_2 is not None
    (batch,) = await first(watch(after_user_2), 1)
    assert seen(batch) == [
        ("result", 3, "s1.2.1.0.1.2^2.2.0"),
        ("result", 4, "s4.3.1.0.1.2^2.2.0"),
        ("edit", 3, "s6.3.1.0.2.2^2.2.0"),  # version 2's edits of the others
        ("edit", 4, "s8.3.1.0.3.2^2.2.0"),
        ("edit", 1, "s10.3.1.0.1.3^2.2.0"),  # version 3's of everyone
        ("edit", 3, "s11.3.1.0.2.3^2.2.0"),
    ]
    # Resumed from its first cursor: users 1 and 2's deliveries (seq 2, 3) are still dropped.
    resumed = Cursor.parse(batch[0].cursor)
    assert resumed is not None
    assert resumed.replayed == Replayed(2, 2, False)
    (again,) = await first(watch(resumed), 1)
    assert seen(again) == seen(batch)[1:]


async def test_a_replayed_recall_is_not_streamed_again() -> None:
    """A broadcast is recalled once: a replay that showed recall outcomes showed all of its
    recipients' (the broadcast was recalled), so their recall events are dropped too."""
    stream = Batches([result(1, 1, 1), result(2, 3, 2), recall(3, 1, 1), recall(4, 3, 2)])
    broadcast = replace(EDITING, total=2, sent=2, failed=0, recalled=2)
    watch = watches(stream, broadcast, Counted(u1=ResultCounts(sent=1, recalled=1)))
    (batch,) = await first(watch(Cursor.parse("u1.1.0.1")), 1)
    assert [(u.kind, u.result.user_id if u.result else 0) for u in batch] == [
        ("result", 3),
        ("recall", 3),
    ]


async def test_a_replay_resumed_after_a_recall_ended_streams_the_recall() -> None:
    """Done by then (the broadcast recalled, final again): a replay from the cursor would count
    the recall outcomes up to its user id and never show them; the stream shows them all."""
    stream = Batches([result(1, 1, 1), result(2, 3, 2), recall(3, 1, 1), recall(4, 3, 2)])
    recalled = replace(
        EDITING, status=BroadcastStatus.RECALLED, editing=False, total=2, sent=2, failed=0
    )
    watch = watches(stream, recalled, Counted(u1=ResultCounts(sent=1, recalled=1)))
    (batch,) = await first(watch(Cursor.parse("u1.1.0")), 1)
    assert [(u.kind, u.result.user_id if u.result else 0, u.recalled) for u in batch] == [
        ("result", 3, 0),
        ("recall", 1, 1),
        ("recall", 3, 2),
    ]


async def test_a_replay_cursors_counters_are_the_databases() -> None:
    """Counters the database does not have up to its user id (made up, another broadcast's):
    the stream goes on from the database's, as a replay resumed from it does."""
    watch = watches(STREAM, EDITING, Counted(u2=ResultCounts(sent=1, failed=1, edited=1)))
    (batch,) = await first(watch(Cursor.parse("u2.3.0.2.0.2")), 1)
    assert [(u.kind, u.result.user_id if u.result else 0) for u in batch][:2] == [
        ("result", 3),
        ("result", 4),
    ]
    assert (batch[0].sent, batch[0].failed, batch[0].recalled) == (2, 1, 0)


def test_only_a_stream_cursor_carries_what_a_replay_showed() -> None:
    cursor = Cursor.parse("s4.3.1^-7.1.1")
    assert cursor is not None
    assert cursor.replayed == Replayed(-7, 1, True)
    assert str(cursor) == "s4.3.1^-7.1.1"
    for spelled in ("u4.3.1^2.1.0", "s4.3.1~4^2.1.0", "s4.3.1^2.1.2", "s4.3.1^2"):
        assert Cursor.parse(spelled) is None, spelled


async def test_a_replay_resumed_after_an_edit_began_over_sse(sqlite_stack: Stack) -> None:
    """End to end: an SSE replay dropped after five recipients, the broadcast edited, the
    stream resumed with Last-Event-ID: each recipient's delivery once, every edit outcome."""
    stack = sqlite_stack
    users = list(range(500, 520))
    broadcast_id = await send_and_finish(stack, {"message": "v1", "user_ids": users})
    shown = await first_events(stack, broadcast_id, 5)
    assert all(e.id and e.id.startswith("u") for e in shown)
    status, _ = await rest(stack, "POST", f"/v1/broadcasts/{broadcast_id}/edit", {"message": "v2"})
    assert status == 200
    status, rest_of_it = await events(stack, broadcast_id, shown[-1].id)
    assert status == 200
    delivered = [e.data["user_id"] for e in shown + rest_of_it if e.event == "result"]
    assert sorted(delivered) == users  # each once
    edited = [e.data["user_id"] for e in rest_of_it if e.event == "edit"]
    assert sorted(edited) == users


class Rows:
    """A store whose broadcast's rows are read in one page (a replay's read)."""

    def __init__(self, *rows: DeliveryResult) -> None:
        self.rows = rows

    async def list_results(
        self, broadcast_id: int, *, after_user_id: int | None, limit: int
    ) -> list[DeliveryResult]:
        return [r for r in self.rows if after_user_id is None or r.user_id > after_user_id]


async def test_a_replay_shows_the_broadcast_as_it_was_read() -> None:
    """A recall or an edit begun while a replay pages through its rows (their outcomes on later
    pages) is not shown by it: its events, on the stream, are where a resume finds them (a
    replay that showed some of a recall's outcomes would have its resume drop the others')."""
    done = replace(EDITING, editing=False, content_version=2)
    recalled = replace(SENT, user_id=1, recall=RecallOutcome.DELETED)
    edited = replace(SENT, user_id=3, edit=EditOutcome.EDITED, content_version=3)
    watch = watches(Batches(), done, Rows(recalled, edited))
    (batch,) = await first(watch(None), 1)
    shown = [u.result for u in batch if u.result is not None]
    assert [(r.user_id, r.recall, r.edit, r.content_version) for r in shown] == [
        (1, None, None, 1),
        (3, None, None, 2),
    ]
    assert (batch[-1].recalled, batch[-1].edited, batch[-1].cursor) == (0, 0, "u3.2.0")
