"""Recall jobs: deleting a recalled broadcast's messages from the chats that received them.

Guarantees (any number of worker processes):

* A recall job covers the recipients of one send batch (:meth:`Store.recall_batches`). Its
  ``SENT`` recipients without a recall outcome are held for it in SQL (the claim columns, as a
  send job holds pending ones; renewed with every heartbeat), so two handlings never delete
  one recipient's messages at once; each recipient's messages go in one call —
  ``deleteMessage`` for one message, ``deleteMessages`` for an album's — at a slot of the
  bot's rate budget (the same budget, chat pacing and 429 pauses as its sends).
* Outcomes: ``deleted``; ``too_old`` when the messages are 48 hours old or more (no call is
  made) or Telegram says they can no longer be deleted; ``not_found`` when Telegram does not
  find the one message; ``failed`` for any other refusal, or when every attempt of a
  transient error (5xx, network) failed. Each is recorded in SQL once (the first wins) and
  then published as a recall event (watchers, SSE); the outcomes of a job's concurrent
  deletes are recorded together (group commit: one transaction and one publish per group).
* A job whose recipients include a send still in flight (a pending recipient held by a send
  job) or another handling's is handed back (``nak``) and looks again a heartbeat later: the
  in-flight send is recorded, then recalled. The worker that records the last outcome moves the
  broadcast to ``recalled`` (the dispatcher does when nobody was sent anything).
* A worker killed during a recall loses only what it had not recorded: its claims lapse
  within a lease and JetStream redelivers the job; recipients whose delete was answered but
  not recorded are deleted again — Telegram then answers "message to delete not found", so
  at most the deletes in flight at the kill (``worker.concurrency``) are reported
  ``not_found`` instead of ``deleted``. A redelivered job publishes the events of the
  outcomes already recorded again (JetStream drops those it has).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from tgbroadcast.core.domain.errors import NotFound, PermanentError, RateLimited, TelegramError
from tgbroadcast.core.domain.model import (
    Broadcast,
    BroadcastStatus,
    DeliveryResult,
    DeliveryState,
    RecallOutcome,
)
from tgbroadcast.core.metrics import Metrics
from tgbroadcast.core.queue import FinishedEvent, Job, Queue, RecallEvent, ReceivedJob
from tgbroadcast.core.store import RecallResult, RecallTarget, Store
from tgbroadcast.worker.claims import job_fields, keep_alive
from tgbroadcast.worker.telegram import NotSent, TelegramSender

if TYPE_CHECKING:
    from tgbroadcast.worker.delivery import Limiter

logger = logging.getLogger(__name__)

DELETE_WINDOW = timedelta(hours=48)
"""How long after sending Telegram lets a bot delete a message."""

_TOO_OLD = "message can't be deleted"
_NOT_FOUND = "message to delete not found"


class Recaller:
    """Runs one bot's recall jobs (a lane's, beside its :class:`Deliverer`)."""

    def __init__(
        self,
        *,
        store: Store,
        queue: Queue,
        sender: TelegramSender,
        limiter: Limiter,
        metrics: Metrics,
        concurrency: int,
        max_attempts: int,
        lease: float,
        heartbeat_interval: float,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        bot: str,
    ) -> None:
        self._store = store
        self._queue = queue
        self._sender = sender
        self._limiter = limiter
        self._metrics = metrics
        self._deletes = asyncio.Semaphore(concurrency)
        self._max_attempts = max_attempts
        self._lease = lease
        self._heartbeat_interval = heartbeat_interval
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._bot = bot

    async def handle(
        self, received: ReceivedJob, *, token: str, started: Callable[[], None] = lambda: None
    ) -> None:
        """Recall the job's recipients as ``token`` and settle the job: ack when done, nak
        when some are held elsewhere (it comes back), term for an unknown broadcast.
        ``started()`` once its deletes have begun (the worker may take its next job)."""
        job = received.job
        try:
            broadcast = await self._store.get_broadcast(job.broadcast_id)
        except NotFound:
            logger.error("recall job of an unknown broadcast dropped", extra=job_fields(received))
            await received.term()
            return
        if broadcast.bot != self._bot:
            await self._queue.publish_jobs(
                [
                    Job(
                        broadcast_id=job.broadcast_id,
                        user_ids=job.user_ids,
                        bot=broadcast.bot,
                        recall=True,
                    )
                ]
            )
            await received.ack()
            return
        if received.num_delivered > 1:
            await self._republish(job)
        if broadcast.status is not BroadcastStatus.RECALLING:  # recalled: nothing left
            await received.ack()
            return
        hold = _Hold(
            self._store, job, token=token, lease=self._lease, margin=self._heartbeat_interval
        )
        stop = asyncio.Event()
        heartbeat = asyncio.create_task(
            keep_alive(received, hold, stop, interval=self._heartbeat_interval), name="recall-hb"
        )
        written = _Outcomes(self, broadcast.id)
        recorded = written.recorded
        try:
            busy = await hold.take()
            started()
            outcomes = await asyncio.gather(
                *(self._recall(broadcast, target, hold, written) for target in hold.held),
                return_exceptions=True,
            )
        finally:
            stop.set()
            await asyncio.gather(heartbeat, return_exceptions=True)
        left = [t.user_id for t in hold.held if t.user_id not in recorded]
        if left:
            with contextlib.suppress(Exception):
                await self._store.release_claims(job.broadcast_id, left, token=token)
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                logger.warning(
                    "recalling a recipient failed; the job comes back",
                    extra={**job_fields(received), "error": repr(outcome)},
                )
            elif isinstance(outcome, BaseException):
                raise outcome
        if busy or left:
            logger.info(
                "recall job handed back: recipients in flight or held elsewhere",
                extra={**job_fields(received), "busy": busy, "unrecorded": len(left)},
            )
            await received.nak(delay=self._heartbeat_interval)
        else:
            await received.ack()
        finished = await self._store.finish_recall(job.broadcast_id, now=datetime.now(UTC))
        if finished is not None:
            logger.info("broadcast recalled", extra={"broadcast_id": job.broadcast_id})
            await self._queue.publish_events(
                [FinishedEvent(broadcast_id=job.broadcast_id, status=BroadcastStatus.RECALLED)]
            )

    async def _recall(
        self, broadcast: Broadcast, target: RecallTarget, hold: _Hold, outcomes: _Outcomes
    ) -> None:
        """Delete one recipient's messages and record the outcome (unless its hold lapsed)."""
        result = await self._outcome(broadcast, target, hold)
        if result is not None:
            await outcomes.add(result, target)

    async def _outcome(
        self, broadcast: Broadcast, target: RecallTarget, hold: _Hold
    ) -> RecallResult | None:
        def result(outcome: RecallOutcome, error: str | None = None) -> RecallResult:
            return RecallResult(
                broadcast_id=broadcast.id,
                user_id=target.user_id,
                outcome=outcome,
                at=datetime.now(UTC),
                error=error,
            )

        if not target.message_ids:
            return result(RecallOutcome.FAILED, "no message id was recorded for this delivery")
        if datetime.now(UTC) - target.sent_at >= DELETE_WINDOW:
            return result(RecallOutcome.TOO_OLD)
        attempts = 0
        while True:
            try:
                async with self._deletes:
                    if not await self._delete(broadcast, target, hold):
                        return None
                return result(RecallOutcome.DELETED)
            except RateLimited as exc:  # not an attempt: every worker pauses, then it is resent
                self._metrics.rate_limited.labels(bot=self._bot).inc()
                logger.warning(
                    "rate limited by Telegram while recalling; pausing the bot on every worker",
                    extra={
                        "bot": self._bot,
                        "broadcast_id": broadcast.id,
                        "retry_after": exc.retry_after,
                    },
                )
                await self._limiter.pause(exc.retry_after)
                continue
            except PermanentError as exc:
                text = exc.description.lower()
                if _NOT_FOUND in text:
                    return result(RecallOutcome.NOT_FOUND)
                if _TOO_OLD in text:
                    return result(RecallOutcome.TOO_OLD)
                return result(RecallOutcome.FAILED, exc.description)
            except TelegramError as exc:
                attempts += 1
                if not exc.retryable or attempts >= self._max_attempts:
                    return result(RecallOutcome.FAILED, exc.description)
                ceiling = min(self._backoff_cap, self._backoff_base * 2**attempts)
                await asyncio.sleep(random.uniform(0, ceiling))

    async def _delete(self, broadcast: Broadcast, target: RecallTarget, hold: _Hold) -> bool:
        """One delete call at a slot of the bot's budget; False if the hold lapsed first."""
        permit = await self._limiter.reserve(target.user_id)

        async def gate() -> bool:
            if not hold.usable(target.user_id):
                return False
            await permit.use()
            return hold.usable(target.user_id)

        try:
            await self._sender.delete(
                target.user_id, target.message_ids, broadcast_id=broadcast.id, gate=gate
            )
        except NotSent:
            return False
        finally:
            permit.release()
        return True

    async def _republish(self, job: Job) -> None:
        """Publish again the recall events a previous handling recorded (it may have died
        before publishing them; JetStream drops those it has)."""
        results = await self._store.results_among(job.broadcast_id, job.user_ids)
        events = [RecallEvent(result=r) for r in results if r.recall is not None]
        if events:
            await self._queue.publish_events(events)


class _Outcomes:
    """A job's recall outcomes, recorded in groups: whoever finds the lock free writes every
    outcome waiting (one transaction, one publish), so while one group commits the next one
    gathers. An outcome is recorded before its recipient's ``add`` returns."""

    def __init__(self, recaller: Recaller, broadcast_id: int) -> None:
        self._recaller = recaller
        self._broadcast_id = broadcast_id
        self._waiting: list[tuple[RecallResult, RecallTarget]] = []
        self._lock = asyncio.Lock()
        self.recorded: set[int] = set()
        """Recipients whose outcome is in SQL (this job's, or an earlier handling's)."""

    async def add(self, result: RecallResult, target: RecallTarget) -> None:
        self._waiting.append((result, target))
        async with self._lock:
            group, self._waiting = self._waiting, []
            if group:  # else an earlier holder wrote this one with its group
                await self._write(group)

    async def _write(self, group: list[tuple[RecallResult, RecallTarget]]) -> None:
        recaller = self._recaller
        written = set(await recaller._store.record_recalls([result for result, _ in group]))
        self.recorded.update(target.user_id for _, target in group)
        events = []
        for result, target in group:
            if target.user_id not in written:
                continue
            recaller._metrics.recalls.labels(outcome=result.outcome.value, bot=recaller._bot).inc()
            ids = target.message_ids
            delivery = DeliveryResult(
                broadcast_id=self._broadcast_id,
                user_id=target.user_id,
                state=DeliveryState.SENT,
                finished_at=target.sent_at,
                message_id=ids[0] if ids else None,
                message_ids=ids if len(ids) > 1 else (),
                recall=result.outcome,
                recall_error=result.error,
            )
            events.append(RecallEvent(result=delivery))
        if events:
            await recaller._queue.publish_events(events)


class _Hold:
    """A recall job's claims on its sent recipients, usable while at least ``margin``
    seconds of the lease are left by this process's clock."""

    def __init__(self, store: Store, job: Job, *, token: str, lease: float, margin: float) -> None:
        self._store = store
        self._job = job
        self._token = token
        self._lease = lease
        self._margin = margin
        self.held: tuple[RecallTarget, ...] = ()
        self._holds: frozenset[int] = frozenset()
        self._usable_until = float("-inf")

    async def take(self) -> int:
        """Hold the job's sent recipients still to recall; how many are busy elsewhere."""
        started = time.monotonic()
        now = datetime.now(UTC)
        claim = await self._store.claim_recall(
            self._job.broadcast_id,
            self._job.user_ids,
            token=self._token,
            now=now,
            until=now + timedelta(seconds=self._lease),
        )
        self.held = claim.held
        self._holds = frozenset(t.user_id for t in claim.held)
        self._usable_until = started + self._lease - self._margin
        return claim.busy

    async def renew(self) -> None:
        """Extend the claims still held (recorded ones drop out; lost ones stay lost)."""
        started = time.monotonic()
        now = datetime.now(UTC)
        claim = await self._store.claim_recall(
            self._job.broadcast_id,
            sorted(self._holds),
            token=self._token,
            now=now,
            until=now + timedelta(seconds=self._lease),
        )
        self._holds = frozenset(t.user_id for t in claim.held)
        self._usable_until = started + self._lease - self._margin

    def usable(self, user_id: int) -> bool:
        """Whether a delete for ``user_id`` may start now."""
        return user_id in self._holds and time.monotonic() < self._usable_until
