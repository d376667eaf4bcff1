"""The one core both transports call: gRPC and HTTP are thin adapters over this.

Guarantees:

* ``send_message`` validates first and writes nothing on bad input; when it returns, the
  broadcast and every recipient are committed in SQL (the truth) and its jobs are on their way
  to NATS through the :class:`~broadcasting.dispatch.Dispatcher`, which finishes the job after
  a crash (see there).
* ``watch`` yields every recipient's final outcome exactly once, replayed first then live, and
  ends after the broadcast is final; it holds a bounded number of events in memory however
  slowly it is consumed.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace

from broadcasting.dispatch import Dispatcher
from broadcasting.metrics import Metrics
from broadcasting.model import (
    Broadcast,
    BroadcastStatus,
    DeliveryResult,
    DeliveryState,
    User,
    UserProfile,
)
from broadcasting.queue import FinishedEvent, Idle, Queue, ResultEvent
from broadcasting.store import Store
from broadcasting.validation import (
    SendRequest,
    encode_page_token,
    validate_page,
    validate_send,
    validate_users,
)

logger = logging.getLogger(__name__)

REPLAY_PAGE = 500


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchUpdate:
    """One message of a watch: a recipient's outcome (``None`` on the closing update) and the
    counters including it."""

    result: DeliveryResult | None
    status: BroadcastStatus
    total: int
    sent: int
    failed: int

    @property
    def pending(self) -> int:
        return self.total - self.sent - self.failed


@dataclass(frozen=True, slots=True, kw_only=True)
class BroadcastReport:
    """A broadcast with its recipients counted per final outcome."""

    broadcast: Broadcast
    outcome_counts: Mapping[DeliveryState, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class UsersPage:
    """A page of users; ``next_page_token`` is empty on the last page."""

    users: tuple[User, ...]
    next_page_token: str


class BroadcastingService:
    """Creates broadcasts, reports on them, and manages users."""

    def __init__(
        self,
        *,
        store: Store,
        queue: Queue,
        dispatcher: Dispatcher,
        metrics: Metrics,
        max_user_ids: int,
        missing_event_grace: float = 120.0,
    ) -> None:
        self._store = store
        self._queue = queue
        self._dispatcher = dispatcher
        self._metrics = metrics
        self._max_user_ids = max_user_ids
        self._missing_event_grace = missing_event_grace

    async def send_message(self, request: SendRequest) -> Broadcast:
        new = validate_send(request, max_user_ids=self._max_user_ids)
        if request.media_data:
            # The bytes wait in the queue's media store; only their name goes to SQL.
            name = f"upload-{uuid.uuid4().hex}"
            await self._queue.put_media(name, request.media_data)
            new = replace(new, content=replace(new.content, media_upload=name))
        broadcast = await self._store.create_broadcast(new)
        self._metrics.broadcasts_created.inc()
        self._metrics.recipients_accepted.inc(broadcast.total)
        logger.info(
            "broadcast created",
            extra={
                "broadcast_id": broadcast.id,
                "total": broadcast.total,
                "media_type": new.content.media_type.value,
            },
        )
        if not broadcast.status.is_final:
            self._dispatcher.dispatch(broadcast.id)
        return broadcast

    async def metrics_text(self) -> bytes:
        """The Prometheus exposition of this process's metrics."""
        return await self._metrics.render(queue_depth=self._queue.pending_jobs)

    async def get_broadcast(self, broadcast_id: int) -> BroadcastReport:
        broadcast = await self._store.get_broadcast(broadcast_id)
        counts = await self._store.outcome_counts(broadcast_id)
        return BroadcastReport(broadcast=broadcast, outcome_counts=counts)

    async def upsert_users(self, users: Sequence[UserProfile]) -> int:
        return await self._store.upsert_users(validate_users(users))

    async def list_users(self, *, page_size: int, page_token: str) -> UsersPage:
        limit, after = validate_page(page_size, page_token)
        page = await self._store.list_users(after=after, limit=limit)
        return UsersPage(
            users=page.users,
            next_page_token="" if page.next_after is None else encode_page_token(page.next_after),
        )

    async def watch(self, broadcast_id: int) -> AsyncIterator[WatchUpdate]:
        """Every outcome of the broadcast once, then a closing update with the final status.

        A finished broadcast is replayed from SQL. A running one is followed on the events
        stream from its start; the stream ends when every outcome the database holds has been
        seen and the broadcast is final. Events are published at least once after the SQL
        commit (a worker that crashed in between re-publishes them when its job is redelivered),
        so a missing event is waited for up to ``missing_event_grace`` seconds before the watch
        closes anyway.
        """
        broadcast = await self._store.get_broadcast(broadcast_id)
        if broadcast.status.is_final:
            async for update in self._replay(broadcast):
                yield update
            return
        total = broadcast.total
        sent = failed = 0
        final: Broadcast | None = None
        final_since = 0.0
        async with aclosing(self._queue.watch(broadcast_id)) as events:
            async for event in events:
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
                    )
                elif isinstance(event, FinishedEvent | Idle) and (
                    # COMPLETED counts never move again; a FAILED broadcast's can (sends in
                    # flight when it stopped), so it is re-read while events keep coming.
                    final is None or final.status is not BroadcastStatus.COMPLETED
                ):
                    latest = await self._store.get_broadcast(broadcast_id)
                    if latest.status.is_final:
                        if final is None:
                            final_since = time.monotonic()
                        final = latest
                if final is None:
                    continue
                seen_all = sent + failed >= final.sent + final.failed
                if seen_all and (
                    final.status is BroadcastStatus.COMPLETED or isinstance(event, Idle)
                ):
                    break
                if time.monotonic() - final_since > self._missing_event_grace:
                    logger.warning(
                        "watch closed with outcomes missing from the event stream",
                        extra={
                            "broadcast_id": broadcast_id,
                            "seen": sent + failed,
                            "expected": final.sent + final.failed,
                        },
                    )
                    break
        assert final is not None
        yield WatchUpdate(result=None, status=final.status, total=total, sent=sent, failed=failed)

    async def _replay(self, broadcast: Broadcast) -> AsyncIterator[WatchUpdate]:
        sent = failed = 0
        after: int | None = None
        while True:
            page = await self._store.list_results(
                broadcast.id, after_user_id=after, limit=REPLAY_PAGE
            )
            for result in page:
                if result.state.delivered:
                    sent += 1
                else:
                    failed += 1
                yield WatchUpdate(
                    result=result,
                    status=broadcast.status,
                    total=broadcast.total,
                    sent=sent,
                    failed=failed,
                )
            if len(page) < REPLAY_PAGE:
                break
            after = page[-1].user_id
        yield WatchUpdate(
            result=None,
            status=broadcast.status,
            total=broadcast.total,
            sent=sent,
            failed=failed,
        )
