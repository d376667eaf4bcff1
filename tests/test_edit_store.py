"""An edit's statements on every backend: the new content stored as the next version (media
too, its file_id let go), its batches, one holder per sent recipient at a time, the first
outcome per version recorded and counted once, an older version's outcomes not counted as
the newest's, and the edit's end only when nobody is left."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tgbroadcast.core.domain.content import ContentOptions
from tgbroadcast.core.domain.errors import FailedPrecondition
from tgbroadcast.core.domain.model import (
    BroadcastStatus,
    Content,
    ContentEdit,
    ControlAction,
    DeliveryResult,
    DeliveryState,
    EditOutcome,
    MediaType,
    NewBroadcast,
)
from tgbroadcast.core.domain.states import Command
from tgbroadcast.core.store import EditResult, Store

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def sent(broadcast_id: int, user_id: int, version: int = 1) -> DeliveryResult:
    return DeliveryResult(
        broadcast_id=broadcast_id,
        user_id=user_id,
        state=DeliveryState.SENT,
        finished_at=AT,
        message_id=user_id * 10,
        content_version=version,
    )


def edited(broadcast_id: int, user_id: int, version: int, outcome: EditOutcome) -> EditResult:
    return EditResult(broadcast_id=broadcast_id, user_id=user_id, outcome=outcome, version=version)


async def test_an_edit_holds_records_and_ends_once(store: Store) -> None:
    created = await store.create_broadcast(
        NewBroadcast(content=Content(message="old"), user_ids=tuple(range(1, 8)))
    )
    bid = created.id
    await store.record_results([sent(bid, 1), sent(bid, 2), sent(bid, 3)])
    # 4 has a send in flight; 5, 6, 7 were never attempted.
    assert (await store.claim_recipients(bid, [4], token="sender", lease_seconds=60)).held == {4}
    now = datetime.now(UTC)
    first = await store.edit_broadcast(
        bid, ContentEdit(message="new", options=ContentOptions()), actor="ops", now=now
    )
    assert (first.content_version, first.editing, first.edited) == (2, True, 0)
    assert first.content.message == "new"
    assert first.resumed_at == now  # a new generation of send jobs
    assert first.actions[-1].action is ControlAction.EDIT
    until = now + timedelta(seconds=60)

    batches = [b async for b in store.edit_batches(bid, version=2, batch_size=3, now=now)]
    assert batches == [(1, 2, 3), (4, 5, 6)]  # 7's batch has nobody to edit
    holder = await store.claim_edit(bid, [1, 2, 3, 4], version=2, token="a", now=now, until=until)
    other = await store.claim_edit(bid, [1, 2, 3, 4], version=2, token="b", now=now, until=until)
    assert ([t.user_id for t in holder.held], holder.busy) == ([1, 2, 3], 1)
    assert [t.content_version for t in holder.held] == [1, 1, 1]
    assert (other.held, other.busy) == ((), 4)

    results = [edited(bid, 1, 2, EditOutcome.EDITED), edited(bid, 2, 2, EditOutcome.NOT_FOUND)]
    assert await store.record_edits(results) == {1: 1, 2: 2}  # numbered
    again = [edited(bid, 1, 2, EditOutcome.FAILED), edited(bid, 2, 2, EditOutcome.FAILED)]
    assert await store.record_edits(again) == {}  # the first wins
    assert await store.finish_edit(bid, version=2, now=datetime.now(UTC)) is None  # 3, 4 left

    # A second edit before the first ended: its jobs cover everyone behind it; an outcome of
    # the first version still recorded is not counted as the second's.
    second = await store.edit_broadcast(
        bid, ContentEdit(message="newer", options=ContentOptions()), actor="ops", now=now
    )
    assert (second.content_version, second.edited) == (3, 0)
    late = [edited(bid, 1, 2, EditOutcome.FAILED), edited(bid, 3, 2, EditOutcome.EDITED)]
    assert await store.record_edits(late) == {3: 0}  # 1 has it; 3's is older: uncounted
    assert (await store.get_broadcast(bid)).edited == 0
    assert await store.finish_edit(bid, version=2, now=datetime.now(UTC)) is None  # superseded
    await store.record_results([sent(bid, 4, version=3)])  # the send in flight, new content
    later = datetime.now(UTC)
    claim = await store.claim_edit(
        bid, [1, 2, 3, 4], version=3, token="c", now=later, until=later + timedelta(seconds=60)
    )
    assert [t.user_id for t in claim.held] == [1, 2, 3]  # 4 was sent version 3
    assert await store.record_edits([edited(bid, u, 3, EditOutcome.EDITED) for u in (1, 2, 3)]) == {
        1: 1,
        2: 2,
        3: 3,
    }
    ended = await store.finish_edit(bid, version=3, now=datetime.now(UTC))
    assert ended is not None
    assert (ended.editing, ended.edited) == (False, 3)
    assert await store.finish_edit(bid, version=3, now=datetime.now(UTC)) is None  # once
    assert await store.edit_counts(bid, 3) == {EditOutcome.EDITED: 3}
    report = await store.delivery_report(bid, after_user_id=None, limit=10)
    assert {d.user_id: (d.content_version, d.edit) for d in report if d.user_id < 5} == {
        1: (3, EditOutcome.EDITED),
        2: (3, EditOutcome.EDITED),
        3: (3, EditOutcome.EDITED),
        4: (3, None),
    }


async def test_new_media_lets_the_old_file_id_go_and_refused_states_change_nothing(
    store: Store,
) -> None:
    photo = Content(message="", media_type=MediaType.PHOTO, media_url="https://e.com/a.jpg")
    created = await store.create_broadcast(NewBroadcast(content=photo, user_ids=(1,)))
    bid = created.id
    await store.store_media_file_id(bid, "old-file-id")
    now = datetime.now(UTC)
    caption = await store.edit_broadcast(
        bid, ContentEdit(message="c", options=ContentOptions()), actor="ops", now=now
    )
    assert (caption.content_version, caption.media_version) == (2, 1)
    assert await store.media_file_id(bid) == "old-file-id"  # the media stayed
    media = await store.edit_broadcast(
        bid,
        ContentEdit(message="c", options=ContentOptions(), media_url="https://e.com/b.jpg"),
        actor="ops",
        now=now,
    )
    assert (media.content_version, media.media_version) == (3, 3)
    assert media.content.media_url == "https://e.com/b.jpg"
    assert await store.media_file_id(bid, 3) is None
    await store.store_media_file_id(bid, "stale", 1)  # a send of the old media, late
    assert await store.media_file_id(bid, 3) is None
    await store.store_media_file_id(bid, "new-file-id", 3)
    assert await store.media_file_id(bid, 3) == "new-file-id"

    scheduled = await store.create_broadcast(
        NewBroadcast(content=Content(message="x"), user_ids=(1,), send_at=now + timedelta(days=1))
    )
    assert scheduled.status is BroadcastStatus.SCHEDULED
    changed = await store.edit_broadcast(
        scheduled.id, ContentEdit(message="y", options=ContentOptions()), actor="ops", now=now
    )
    assert (changed.content.message, changed.editing) == ("y", False)  # nothing sent to edit

    await store.move_broadcast(bid, Command.RECALL)
    with pytest.raises(FailedPrecondition) as refused:
        await store.edit_broadcast(
            bid, ContentEdit(message="z", options=ContentOptions()), actor="ops", now=now
        )
    assert refused.value.state == "recalling"
    assert (await store.get_broadcast(bid)).content.message == "c"


async def test_a_late_send_of_the_old_content_opens_the_edit_again(store: Store) -> None:
    created = await store.create_broadcast(
        NewBroadcast(content=Content(message="old"), user_ids=(1, 2))
    )
    bid = created.id
    await store.record_results([sent(bid, 1)])
    # 2's send of the old content is in flight when the edit comes.
    assert (await store.claim_recipients(bid, [2], token="sender", lease_seconds=60)).held == {2}
    await store.edit_broadcast(
        bid, ContentEdit(message="new", options=ContentOptions()), actor="ops", now=AT
    )
    await store.mark_generation_dispatched(bid, AT)
    assert await store.record_edits([edited(bid, 1, 2, EditOutcome.EDITED)]) == {1: 1}
    # A sending broadcast's sends in flight are mostly of the new content: they do not hold
    # the edit open...
    ended = await store.finish_edit(bid, version=2, now=datetime.now(UTC))
    assert ended is not None
    assert (ended.editing, ended.status) == (False, BroadcastStatus.RUNNING)
    # ...and one of the old content, recorded after, opens it again for a new dispatch.
    await store.record_results([sent(bid, 2, version=1)])
    reopened = await store.get_broadcast(bid)
    assert (reopened.editing, reopened.status) == (True, BroadcastStatus.COMPLETED)
    assert bid in await store.undispatched_broadcasts()
    assert await store.finish_edit(bid, version=2, now=datetime.now(UTC)) is None  # 2 left
    assert await store.record_edits([edited(bid, 2, 2, EditOutcome.EDITED)]) == {2: 2}
    assert await store.finish_edit(bid, version=2, now=datetime.now(UTC)) is not None
    # A send of the newest content opens nothing.
    other = await store.create_broadcast(NewBroadcast(content=Content(message="x"), user_ids=(1,)))
    await store.record_results([sent(other.id, 1)])
    assert not (await store.get_broadcast(other.id)).editing
