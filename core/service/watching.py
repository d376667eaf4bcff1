"""Watching a broadcast: every recipient's outcome once, then the final status — resumable.

:func:`watch` is what ``WatchBroadcast`` and the SSE route stream. A finished broadcast is
replayed from SQL; a running one is followed on the events stream through the process's
shared feeds (:mod:`tgbroadcast.core.queue.feeds`: one NATS consumer per broadcast, however
many watchers).

A recalled broadcast's watch also carries each sent recipient's recall outcome: live, as a
second update of that recipient (its ``result`` with ``recall`` set, counted in ``recalled``),
after its delivery's; in a replay, on the recipient's one update. The watch of a ``recalling``
broadcast ends once it is ``recalled``.

Every update carries a *cursor* (:mod:`.cursors`): an opaque position (``s<seq>...`` on the
events stream, ``u<user_id>...`` in a replay, with the counters so far) from which
:func:`watch` resumes with ``after=``: the outcomes after it, in the same order, each once,
with the counters going on from where they were. A cursor that cannot be read, or not of
this broadcast (more outcomes than it has, a sequence or user id out of range), starts from
the first outcome. A watch *from now* starts at a stream cursor made of the stream's end and
the broadcast's counters read after it (:meth:`Cursor.now`): only later outcomes come, and the
counters go on from the database's. An outcome recorded before that read but published after
the stream's end (a send in flight when the watch opened) is already in those counters: its
event's ordinal (:attr:`~tgbroadcast.core.queue.ResultEvent.ordinal`, its place among the
broadcast's settled recipients) is within them, and the watch drops it — and so does a watch
resumed from any of its cursors, which carry that *floor* (:mod:`.cursors`). Recall and edit
outcomes likewise, by their own numbers and counters.

A followed broadcast's moves to a status that is not final (paused, resumed, started,
recalling) come in stream order with its outcomes (``StatusEvent``): each is an update of kind
``status`` without a result, and every outcome after it carries that status — an outcome
recorded after a pause says ``paused``. The closing update carries the final status and the
database's final counters.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Protocol

from tgbroadcast.core.domain.model import (
    Broadcast,
    BroadcastStatus,
    DeliveryState,
    EditOutcome,
    RecallOutcome,
)
from tgbroadcast.core.queue import (
    ClickEvent,
    EditEvent,
    FinishedEvent,
    Idle,
    RecallEvent,
    ResultEvent,
    StatusEvent,
)
from tgbroadcast.core.queue.watching import Sequenced
from tgbroadcast.core.service.cursors import (
    Cursor,
)
from tgbroadcast.core.service.shared_reads import SharedReads
from tgbroadcast.core.service.watch_updates import STATUS_KIND, At, WatchUpdate
from tgbroadcast.core.store import Store

logger = logging.getLogger(__name__)

REPLAY_PAGE = 500
QUIET_READ_AGE = 1.0
"""Seconds old a read of the broadcast may be when a quiet second asks for one."""
_BEFORE_SENDING = frozenset({BroadcastStatus.SCHEDULED, BroadcastStatus.QUEUED})
"""Statuses an outcome proves wrong: its broadcast is running (or past it) by then."""
_SETTLED = frozenset({BroadcastStatus.COMPLETED, BroadcastStatus.RECALLED})
"""Final statuses whose counters never move again."""
_IDLE = (Idle(),)
"""A quiet second, as a batch of one."""


class EventSource(Protocol):
    """Where a running broadcast's events come from
    (:class:`tgbroadcast.core.queue.feeds.EventFeeds`)."""

    def watch_batches(
        self, broadcast_id: int, start_seq: int = 1, *, idle_after: float = 1.0
    ) -> AsyncGenerator[list[Sequenced] | Idle, None]: ...


def of_broadcast(cursor: Cursor | None, broadcast: Broadcast) -> Cursor | None:
    """``cursor`` if it can be one of ``broadcast``'s; None (from the first outcome) when it
    counts more outcomes of any kind than the broadcast has recipients."""
    if (
        cursor is not None
        and max(cursor.sent + cursor.failed, cursor.recalled, cursor.edited) > broadcast.total
    ):
        return None
    return cursor


def opening(
    cursor: Cursor,
    broadcast: Broadcast,
    outcome_counts: Mapping[DeliveryState, int],
    recall_counts: Mapping[RecallOutcome, int],
    edit_counts: Mapping[EditOutcome, int],
) -> WatchUpdate:
    """A watch *from now*'s first update: a ``status`` one with ``broadcast``'s status, the
    counters of ``cursor`` (:meth:`Cursor.now`) and the outcomes they hold by kind."""
    update = At(cursor).update(None, broadcast.status, broadcast.total, STATUS_KIND)
    return replace(
        update,
        outcome_counts=dict(outcome_counts),
        recall_counts=dict(recall_counts),
        edit_counts=dict(edit_counts),
        floor=cursor.floor,
    )


async def watch(
    store: Store,
    events: EventSource,
    broadcast: Broadcast,
    *,
    after: Cursor | None = None,
    missing_event_grace: float = 120.0,
    on_finished: Callable[[int], None] | None = None,
    reads: SharedReads | None = None,
    steps: SharedSteps | None = None,
) -> AsyncGenerator[list[WatchUpdate], None]:
    """Every outcome of ``broadcast`` once (after ``after``), then a closing update with the
    final status — in batches: the updates of the events that arrived together (a replay's
    page), in order, never empty.

    A finished broadcast is replayed from SQL (a stream cursor resumes on the events stream,
    which keeps a week of events). A running one is followed on ``events``; the watch ends when
    every outcome the database holds has been seen and the broadcast is final. Events are
    published at least once after the SQL commit (a worker that crashed in between re-publishes
    them when its job is redelivered), so a missing event is waited for up to
    ``missing_event_grace`` seconds before the watch closes anyway. The broadcast's row is
    read again after its finish event and after each quiet second (a finish whose event was
    missed), through ``reads``: the process's watchers share those reads, and through
    ``steps`` the updates they make of the same events from the same place.

    Batches, not single updates: every outcome of a watched broadcast passes through here
    once per watcher, and each step of a generator chain costs as much as the update itself.
    """
    after = of_broadcast(after, broadcast)
    replayable = broadcast.status.is_final and not broadcast.editing
    if after is not None and after.kind == "u":
        # A replay's cursor of a broadcast edited or recalled since (under way or done) goes on
        # on the stream from its start, dropping what the replay showed (its updates carry
        # that: a resume drops it too).
        after = await _resumed(store, broadcast, after, replayable=replayable)
    if replayable and (after is None or after.kind == "u"):
        async for batch in _replay(store, broadcast, after):
            yield batch
        return
    async for batch in _follow(
        SharedReads(store) if reads is None else reads,
        SharedSteps() if steps is None else steps,
        events,
        broadcast,
        after,
        missing_event_grace=missing_event_grace,
        on_finished=on_finished,
    ):
        yield batch


async def _follow(
    reads: SharedReads,
    steps: SharedSteps,
    events: EventSource,
    broadcast: Broadcast,
    after: Cursor | None,
    *,
    missing_event_grace: float,
    on_finished: Callable[[int], None] | None,
) -> AsyncIterator[list[WatchUpdate]]:
    broadcast_id, total = broadcast.id, broadcast.total
    at = At(Cursor("s", 0, 0, 0) if after is None else after)
    status = broadcast.status
    final: Broadcast | None = None
    final_since = 0.0
    out: list[WatchUpdate] = []

    async with aclosing(events.watch_batches(broadcast_id, at.seq + 1)) as stream:
        async for batch in stream:
            done = False
            sequenced: Sequence[Sequenced] = () if isinstance(batch, Idle) else batch
            items: Sequence[Sequenced | Idle] = _IDLE if isinstance(batch, Idle) else batch
            i = 0
            while i < len(items):
                item = items[i]
                event = None if isinstance(item, Idle) else item.event
                if isinstance(item, Sequenced) and not isinstance(event, FinishedEvent):
                    # Outcomes and status moves: until the final counters are known, as
                    # many as come before a finish event at once (shared with the watchers
                    # at the same place); after, one by one (each may be the last).
                    made = (
                        steps.step(broadcast_id, total, sequenced, i, at, status)
                        if final is None
                        else _step(total, sequenced, i, at, status, most=1)
                    )
                    status = made.status
                    out.extend(made.updates)
                    i += made.used
                    if final is None:
                        continue
                else:
                    i += 1
                    if isinstance(item, Sequenced):
                        at.seq = item.seq
                    if on_finished is not None and event is not None:
                        on_finished(broadcast_id)
                    if (
                        # COMPLETED and RECALLED counts never move again (unless an edit is
                        # under way); a FAILED broadcast's can (sends in flight when it
                        # stopped), so it is re-read while events keep coming.
                        final is None or final.status not in _SETTLED or final.editing
                    ):
                        if out:  # what came before the read is not held up by it
                            yield out
                            out = []
                        # After its finish event: a read begun since; after a quiet second:
                        # one begun at most a second ago, shared with the process's other
                        # watchers.
                        age = 0.0 if event is not None else QUIET_READ_AGE
                        latest = await reads.get(broadcast_id, fresh_after=reads.now() - age)
                        status = latest.status
                        if latest.status.is_final:
                            if final is None or latest.editing:  # grace starts when edits end
                                final_since = time.monotonic()
                            final = latest
                if final is None:
                    continue
                edited = at.edited if at.version == final.content_version else 0
                seen_all = (
                    at.sent + at.failed >= final.sent + final.failed
                    and at.recalled >= final.recalled
                    and edited >= final.edited
                )
                if seen_all and not final.editing and (final.status in _SETTLED or event is None):
                    done = True
                    break
                if time.monotonic() - final_since > missing_event_grace:
                    logger.warning(
                        "watch closed with outcomes missing from the event stream",
                        extra={
                            "broadcast_id": broadcast_id,
                            "seen": at.sent + at.failed,
                            "expected": final.sent + final.failed,
                            "recalls_seen": at.recalled,
                            "recalls_expected": final.recalled,
                            "edits_seen": edited,
                            "edits_expected": final.edited,
                        },
                    )
                    done = True
                    break
            if done:
                break
            if out:
                yield out
                out = []
    assert final is not None
    # The closing counters are the database's (the truth, if some event was never seen).
    at.sent, at.failed, at.recalled = final.sent, final.failed, final.recalled
    at.edited, at.version = final.edited, final.content_version
    out.append(at.update(None, final.status, total))
    yield out


@dataclass(frozen=True, slots=True)
class _Made:
    """What :func:`_step` made of some events: their updates, how many events it stepped
    over, and the watch's place after them."""

    updates: list[WatchUpdate]
    used: int
    place: tuple[int, int, int, int, int, int]
    status: BroadcastStatus
    lowest: tuple[int, int, int]
    """The lowest delivery, recall and edit numbers among the outcomes stepped over
    (:data:`_UNNUMBERED` where none): a watch whose floor reaches none of them
    (:meth:`.cursors.Floor.reaches`) drops none of them."""
    dropped: int
    """Outcomes dropped: numbered within the watch's floor."""


_UNNUMBERED = 2**63
"""The :attr:`_Made.lowest` of events without a numbered outcome."""


def _step(
    total: int,
    events: Sequence[Sequenced],
    start: int,
    at: At,
    status: BroadcastStatus,
    *,
    most: int | None = None,
) -> _Made:
    """The updates of ``events`` from index ``start`` on (up to ``most`` of them), stopping
    before a finish event, moving ``at``; and the status after them."""
    updates: list[WatchUpdate] = []
    stop = len(events) if most is None else min(len(events), start + most)
    before_sending = status in _BEFORE_SENDING
    floor, dropped, replayed = at.floor, 0, at.replayed
    lowest = lowest_recall = lowest_edit = _UNNUMBERED
    i = start
    while i < stop:
        item = events[i]
        event = item.event
        if isinstance(event, ResultEvent):
            at.seq = item.seq
            if before_sending:  # an outcome, dropped or not, says it is running
                status, before_sending = BroadcastStatus.RUNNING, False
            if replayed is not None and replayed.holds(event):
                i += 1
                continue
            ordinal = event.ordinal
            if ordinal:
                if ordinal < lowest:
                    lowest = ordinal
                if ordinal <= floor.settled:  # counted in the counters the watch started from
                    dropped += 1
                    i += 1
                    continue
            result = event.result
            if result.state.delivered:
                at.sent += 1
            else:
                at.failed += 1
            updates.append(at.update(result, status, total))
        elif isinstance(event, FinishedEvent):
            break
        else:
            at.seq = item.seq
            if isinstance(event, StatusEvent):
                if not status.is_final:  # a final status read from SQL is never undone
                    status = event.status
                    before_sending = status in _BEFORE_SENDING
                    updates.append(at.update(None, status, total, STATUS_KIND))
            elif replayed is not None and replayed.holds(event):
                pass  # shown by the replay this watch went on from
            elif isinstance(event, RecallEvent):
                ordinal = event.ordinal
                if ordinal:
                    lowest_recall = min(lowest_recall, ordinal)
                    if ordinal <= floor.recalled:  # counted in the watch's opening
                        dropped += 1
                        i += 1
                        continue
                at.recalled += 1
                updates.append(at.update(event.result, BroadcastStatus.RECALLING, total, "recall"))
            elif isinstance(event, EditEvent):
                version = event.result.content_version
                ordinal = event.ordinal
                if ordinal:
                    lowest_edit = min(lowest_edit, ordinal)
                    if version == floor.version and ordinal <= floor.edited:
                        dropped += 1
                        i += 1
                        continue
                if version > at.version:  # a newer edit: its outcomes are counted afresh
                    at.version, at.edited = version, 0
                if version == at.version:
                    at.edited += 1
                updates.append(at.update(event.result, status, total, "edit"))
            elif isinstance(event, ClickEvent):
                updates.append(at.update(event.result, status, total, "click"))
        i += 1
    lowests = (lowest, lowest_recall, lowest_edit)
    return _Made(updates, i - start, at.place(), status, lowests, dropped)


class SharedSteps:
    """The updates a followed broadcast's events make, made once for every watcher of it in
    the process that was at the same place before them; one per process.

    The watchers of a running broadcast read the same events from one feed
    (:mod:`tgbroadcast.core.queue.feeds`), usually the same batch at the same moment, and a
    watcher's updates of a batch depend only on its place before it: its stream sequence,
    counters and status. The first watcher at a place makes them; the others take the very
    same updates (so what a transport renders of one — an SSE event — is rendered once too)
    and move to the place after them. A watcher *from now* whose floor reaches an outcome of
    the batch (one it drops) makes its own. The latest ``size`` batches are kept.
    """

    def __init__(self, *, size: int = 256) -> None:
        self._size = size
        self._kept: OrderedDict[tuple[object, ...], _Made] = OrderedDict()

    def step(
        self,
        broadcast_id: int,
        total: int,
        events: Sequence[Sequenced],
        start: int,
        at: At,
        status: BroadcastStatus,
    ) -> _Made:
        """:func:`_step` of ``events[start:]``, or what it made for another watcher."""
        if at.replayed is not None:  # what it drops is its own
            return _step(total, events, start, at, status)
        key: tuple[object, ...] = (broadcast_id, events[start].seq, events[-1].seq, status)
        key += (len(events) - start, *at.place())
        made = self._kept.get(key)
        if made is not None and not at.floor.reaches(made.lowest):
            at.seq, at.sent, at.failed, at.recalled, at.edited, at.version = made.place
            return made
        made = _step(total, events, start, at, status)
        if not made.dropped:  # what any watcher at that place makes of them
            if len(self._kept) >= self._size:
                self._kept.popitem(last=False)  # the oldest
            self._kept[key] = made
        return made


async def _resumed(
    store: Store, broadcast: Broadcast, after: Cursor, *, replayable: bool
) -> Cursor:
    """Where a replay's cursor ``after`` goes on: a replay's (itself: the replay counts from
    the database) when the broadcast is still as that replay showed it; else the events
    stream's (:meth:`Cursor.after_replay`) — a recall or an edit under way or done since,
    whose outcomes up to ``after``'s user id a replay would count and never show — with the
    database's counters up to that user id, not the cursor's (which a caller may have kept
    from another broadcast, or made up)."""
    version = broadcast.content_version
    counted = await store.results_through(broadcast.id, after.seq, version=version)
    moved = (after.recalled == 0 < counted.recalled) or (
        version > after.version and counted.edited > 0
    )
    if replayable and not moved:
        return after
    shown = replace(
        after,
        sent=counted.sent,
        failed=counted.failed,
        recalled=counted.recalled if after.recalled else 0,
        edited=counted.edited if after.version == version else min(after.edited, counted.sent),
    )
    return shown.after_replay()


async def _replay(
    store: Store, broadcast: Broadcast, after: Cursor | None
) -> AsyncIterator[list[WatchUpdate]]:
    version = broadcast.content_version
    status, total = broadcast.status, broadcast.total
    # What the replay shows is the broadcast as it was read: a recall or an edit begun since
    # (seen on later pages) is left to the events stream, where a resume finds it.
    recalls = status is BroadcastStatus.RECALLED
    last: int | None = None if after is None else after.seq
    at = At(Cursor("u", 0, 0, 0))
    if last is not None:
        # The counters come from SQL, not from the cursor (which a caller may have kept from
        # another broadcast, or made up): they never pass the broadcast's own.
        counted = await store.results_through(broadcast.id, last, version=version)
        seen = version if counted.edited else 1  # as a replay from the first outcome has it
        recalled = counted.recalled if recalls else 0
        at = At(Cursor("u", last, counted.sent, counted.failed, recalled, counted.edited, seen))

    while True:
        page = await store.list_results(broadcast.id, after_user_id=last, limit=REPLAY_PAGE)
        if broadcast.click_key is not None and page:  # tracked: who opened how many links
            opened = await store.clicks_of(broadcast.id, [result.user_id for result in page])
            page = [
                replace(r, clicks=opened[r.user_id]) if r.user_id in opened else r for r in page
            ]
        batch: list[WatchUpdate] = []
        for result in page:
            if result.recall is not None and not recalls:
                result = replace(result, recall=None, recall_error=None)
            if result.content_version > version:
                result = replace(result, edit=None, edit_error=None, content_version=version)
            if result.state.delivered:
                at.sent += 1
            else:
                at.failed += 1
            if result.recall is not None:
                at.recalled += 1
            if result.edit is not None and result.content_version == version:
                at.edited, at.version = at.edited + 1, version
            last = at.seq = result.user_id
            batch.append(at.update(result, status, total))
        if len(page) < REPLAY_PAGE:
            batch.append(at.update(None, status, total, positioned=last is not None))
            yield batch
            return
        yield batch
