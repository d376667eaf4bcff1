"""Watching a broadcast: every recipient's outcome once, then the final status — resumable.

:func:`watch` is what ``WatchBroadcast`` and the SSE route stream. A finished broadcast is
replayed from SQL; a running one is followed on the events stream through the process's
shared feeds (:mod:`tgbroadcast.core.queue.feeds`: one NATS consumer per broadcast, however
many watchers).

A recalled broadcast's watch also carries each sent recipient's recall outcome: live, as a
second update of that recipient (its ``result`` with ``recall`` set, counted in ``recalled``),
after its delivery's; in a replay, on the recipient's one update. The watch of a ``recalling``
broadcast ends once it is ``recalled``.

Every update carries a *cursor*: an opaque position (``s<seq>.<sent>.<failed>[.<recalled>]``
on the events stream, ``u<user_id>.<sent>.<failed>[.<recalled>]`` in a replay) from which
:func:`watch` resumes with ``after=``: the outcomes after it, in the same order, each once,
with the counters going on from where they were. A cursor that cannot be read, or not of
this broadcast (more outcomes than it has, a sequence or user id out of range), starts from
the first outcome.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Protocol

from tgbroadcast.core.domain.model import Broadcast, BroadcastStatus, DeliveryResult
from tgbroadcast.core.queue import FinishedEvent, Idle, RecallEvent, ResultEvent
from tgbroadcast.core.queue.watching import Sequenced
from tgbroadcast.core.store import Store

logger = logging.getLogger(__name__)

REPLAY_PAGE = 500
_SETTLED = frozenset({BroadcastStatus.COMPLETED, BroadcastStatus.RECALLED})
"""Final statuses whose counters never move again."""
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_CURSOR = re.compile(r"([su])(-?\d{1,19})\.(\d{1,19})\.(\d{1,19})(?:\.(\d{1,19}))?")


class EventSource(Protocol):
    """Where a running broadcast's events come from
    (:class:`tgbroadcast.core.queue.feeds.EventFeeds`, or a queue's ``watch_from``)."""

    def watch(
        self, broadcast_id: int, start_seq: int = 1, *, idle_after: float = 1.0
    ) -> AsyncGenerator[Sequenced | Idle, None]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchUpdate:
    """One message of a watch: a recipient's outcome (``None`` on the closing update), the
    counters including it, and the cursor to resume after it."""

    result: DeliveryResult | None
    status: BroadcastStatus
    total: int
    sent: int
    failed: int
    cursor: str = ""
    recalled: int = 0
    """Recall outcomes so far (this one included)."""

    @property
    def pending(self) -> int:
        return self.total - self.sent - self.failed


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position in a watch: after stream sequence ``seq`` (``kind`` ``s``) or after user id
    ``seq`` of a replay (``u``), with the counters so far."""

    kind: str
    seq: int
    sent: int
    failed: int
    recalled: int = 0

    def __str__(self) -> str:
        text = f"{self.kind}{self.seq}.{self.sent}.{self.failed}"
        return f"{text}.{self.recalled}" if self.recalled else text

    @classmethod
    def parse(cls, text: str) -> Cursor | None:
        """The cursor ``text`` spells; None for anything else."""
        match = _CURSOR.fullmatch(text.strip())
        if match is None:
            return None
        kind, seq, sent, failed, recalled = match.groups()
        cursor = cls(kind, int(seq), int(sent), int(failed), int(recalled or 0))
        if not _INT64_MIN <= cursor.seq <= _INT64_MAX or (kind == "s" and cursor.seq < 0):
            return None  # no stream sequence or user id is out there
        return cursor


async def watch(
    store: Store,
    events: EventSource,
    broadcast: Broadcast,
    *,
    after: Cursor | None = None,
    missing_event_grace: float = 120.0,
    on_finished: Callable[[int], None] | None = None,
) -> AsyncGenerator[WatchUpdate, None]:
    """Every outcome of ``broadcast`` once (after ``after``), then a closing update with the
    final status.

    A finished broadcast is replayed from SQL (a stream cursor resumes on the events stream,
    which keeps a week of events). A running one is followed on ``events``; the watch ends when
    every outcome the database holds has been seen and the broadcast is final. Events are
    published at least once after the SQL commit (a worker that crashed in between re-publishes
    them when its job is redelivered), so a missing event is waited for up to
    ``missing_event_grace`` seconds before the watch closes anyway.
    """
    if after is not None and after.sent + after.failed > broadcast.total:
        after = None  # not a cursor of this broadcast: from the first outcome
    if broadcast.status.is_final and (after is None or after.kind == "u"):
        async for update in _replay(store, broadcast, after):
            yield update
        return
    stream_after = after if after is not None and after.kind == "s" else None
    async for update in _follow(
        store,
        events,
        broadcast,
        stream_after,
        missing_event_grace=missing_event_grace,
        on_finished=on_finished,
    ):
        yield update


async def _follow(
    store: Store,
    events: EventSource,
    broadcast: Broadcast,
    after: Cursor | None,
    *,
    missing_event_grace: float,
    on_finished: Callable[[int], None] | None,
) -> AsyncIterator[WatchUpdate]:
    broadcast_id, total = broadcast.id, broadcast.total
    sent, failed, seq = (0, 0, 0) if after is None else (after.sent, after.failed, after.seq)
    recalled = 0 if after is None else after.recalled
    final: Broadcast | None = None
    final_since = 0.0
    async with aclosing(events.watch(broadcast_id, seq + 1)) as stream:
        async for item in stream:
            event = None if isinstance(item, Idle) else item.event
            if isinstance(event, FinishedEvent) and on_finished is not None:
                on_finished(broadcast_id)
            if isinstance(item, Sequenced):
                seq = item.seq
            if isinstance(event, ResultEvent):
                result = event.result
                if result.state.delivered:
                    sent += 1
                else:
                    failed += 1
                yield WatchUpdate(
                    result=result,
                    status=BroadcastStatus.RUNNING,
                    total=total,
                    sent=sent,
                    failed=failed,
                    cursor=str(Cursor("s", seq, sent, failed, recalled)),
                    recalled=recalled,
                )
            elif isinstance(event, RecallEvent):
                recalled += 1
                yield WatchUpdate(
                    result=event.result,
                    status=BroadcastStatus.RECALLING,
                    total=total,
                    sent=sent,
                    failed=failed,
                    cursor=str(Cursor("s", seq, sent, failed, recalled)),
                    recalled=recalled,
                )
            if (event is None or isinstance(event, FinishedEvent)) and (
                # COMPLETED and RECALLED counts never move again; a FAILED broadcast's can
                # (sends in flight when it stopped), so it is re-read while events keep coming.
                final is None or final.status not in _SETTLED
            ):
                latest = await store.get_broadcast(broadcast_id)
                if latest.status.is_final:
                    if final is None:
                        final_since = time.monotonic()
                    final = latest
            if final is None:
                continue
            seen_all = sent + failed >= final.sent + final.failed and recalled >= final.recalled
            if seen_all and (final.status in _SETTLED or event is None):
                break
            if time.monotonic() - final_since > missing_event_grace:
                logger.warning(
                    "watch closed with outcomes missing from the event stream",
                    extra={
                        "broadcast_id": broadcast_id,
                        "seen": sent + failed,
                        "expected": final.sent + final.failed,
                        "recalls_seen": recalled,
                        "recalls_expected": final.recalled,
                    },
                )
                break
    assert final is not None
    yield WatchUpdate(
        result=None,
        status=final.status,
        total=total,
        sent=sent,
        failed=failed,
        cursor=str(Cursor("s", seq, sent, failed, recalled)),
        recalled=recalled,
    )


async def _replay(
    store: Store, broadcast: Broadcast, after: Cursor | None
) -> AsyncIterator[WatchUpdate]:
    sent, failed = (0, 0) if after is None else (after.sent, after.failed)
    recalled = 0 if after is None else after.recalled
    last: int | None = None if after is None else after.seq
    while True:
        page = await store.list_results(broadcast.id, after_user_id=last, limit=REPLAY_PAGE)
        for result in page:
            if result.state.delivered:
                sent += 1
            else:
                failed += 1
            if result.recall is not None:
                recalled += 1
            last = result.user_id
            yield WatchUpdate(
                result=result,
                status=broadcast.status,
                total=broadcast.total,
                sent=sent,
                failed=failed,
                cursor=str(Cursor("u", last, sent, failed, recalled)),
                recalled=recalled,
            )
        if len(page) < REPLAY_PAGE:
            break
    yield WatchUpdate(
        result=None,
        status=broadcast.status,
        total=broadcast.total,
        sent=sent,
        failed=failed,
        cursor="" if last is None else str(Cursor("u", last, sent, failed, recalled)),
        recalled=recalled,
    )
