"""What recall and edit jobs share: a job's hold on its sent recipients, one Telegram call per
recipient at a slot of the bot's budget, and the outcomes recorded in groups.

Guarantees (any number of worker processes; :mod:`.recall` and :mod:`.edit` add their own):

* A follow-up job covers the recipients of one send batch. Its ``SENT`` recipients still to do
  are held for it in SQL (the claim columns, as a send job holds pending ones; renewed with
  every heartbeat), so two handlings never touch one recipient's messages at once. Each
  recipient's messages take one call at a slot of the bot's rate budget (the same budget,
  chat pacing and 429 pauses as its sends); a call starts only while the hold is surely
  still the job's.
* A 429 pauses the bot on every worker and the call is made again (not an attempt); a
  transient error (5xx, network) is tried again with capped, jittered backoff up to
  ``max_attempts``; a refusal is final at once.
* Each outcome is recorded in SQL once (the first wins), then published as an event
  (watchers, SSE); the outcomes of a job's concurrent calls are recorded together (group
  commit: one transaction and one publish per group; one that finds itself alone while others
  of its job hold a call slot waits :data:`LINGER` for them, so a paced recall's outcomes share
  them too).
* A job whose recipients include a send still in flight or another handling's is handed back
  (``nak``) and looks again a heartbeat later. A worker killed mid-job loses only what it had
  not recorded: its claims lapse within a lease and JetStream redelivers the job, whose
  handling publishes the events of outcomes already recorded again (JetStream drops those it
  has). A call slot is held from the call until its outcome is recorded, so what is made again
  is at most ``concurrency`` calls per killed worker (as for sends;
  :data:`~tgbroadcast.worker.delivery.FOLLOW_UP_SLOTS` per send slot).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from tgbroadcast.core.domain.errors import NotFound, PermanentError, RateLimited, TelegramError
from tgbroadcast.core.domain.model import Broadcast, DeliveryResult, DeliveryState
from tgbroadcast.core.metrics import Metrics
from tgbroadcast.core.queue import Change, ChangeKind, Event, Job, Queue, ReceivedJob
from tgbroadcast.core.store import SentClaim, SentTarget, Store
from tgbroadcast.worker.claims import job_fields, keep_alive
from tgbroadcast.worker.rate_tier import Parked
from tgbroadcast.worker.ratelimit import Limiter
from tgbroadcast.worker.telegram import Gate, NotSent, TelegramSender

logger = logging.getLogger(__name__)

R = TypeVar("R")
"""A recipient's outcome as the job records it (a recall's, an edit's)."""

Claimer = Callable[[Sequence[int], str, datetime, datetime], Awaitable[SentClaim]]
"""Hold ``user_ids`` for ``token`` from ``now`` until ``until`` (the store's claim)."""


class FollowUpJobs(ABC, Generic[R]):
    """Runs one bot's follow-up jobs of one kind (a lane's, beside its ``Deliverer``)."""

    kind: str
    """``recall`` or ``edit``: in log lines."""

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
        note_park: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self._note_park = note_park or _ignore
        self._store = store
        self._queue = queue
        self._sender = sender
        self._limiter = limiter
        self._metrics = metrics
        self._calls = asyncio.Semaphore(concurrency)
        self._max_attempts = max_attempts
        self._lease = lease
        self._heartbeat_interval = heartbeat_interval
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._bot = bot

    # -- what each kind brings ----------------------------------------------------------

    @abstractmethod
    def _active(self, broadcast: Broadcast, job: Job) -> bool:
        """Whether the job still has work (else it is acked untouched)."""

    @abstractmethod
    def _claimer(self, broadcast: Broadcast) -> Claimer:
        """How the job holds its recipients."""

    @abstractmethod
    async def _prepare(self, broadcast: Broadcast, held: Sequence[SentTarget]) -> object:
        """What the calls need beyond the broadcast (read once per job)."""

    @abstractmethod
    async def _outcome(
        self, broadcast: Broadcast, target: SentTarget, prepared: object, hold: Hold
    ) -> R | None:
        """The recipient's outcome (see :meth:`_call`); None if its hold lapsed first."""

    @abstractmethod
    async def _record(self, results: Sequence[R]) -> dict[int, int]:
        """Record outcomes (each recipient's first only); the user ids written, each with its
        number among its broadcast's outcomes of the kind (0: not counted)."""

    @abstractmethod
    def _event(self, broadcast: Broadcast, result: R, target: SentTarget, ordinal: int) -> Event:
        """The event of a recorded outcome numbered ``ordinal`` (and its metric counted)."""

    @abstractmethod
    async def _finish(self, broadcast: Broadcast) -> None:
        """End the follow-up if nobody is left (and tell the watchers)."""

    @abstractmethod
    def _replayed(self, broadcast: Broadcast, results: Sequence[DeliveryResult]) -> list[Event]:
        """The events of outcomes an earlier handling recorded."""

    # -- the shared flow ----------------------------------------------------------------

    async def handle(
        self, received: ReceivedJob, *, token: str, started: Callable[[], None] = lambda: None
    ) -> None:
        """Work the job's recipients as ``token`` and settle the job: ack when done, nak when
        some are held elsewhere (it comes back), term for an unknown broadcast.
        ``started()`` once its calls have begun (the worker may take its next job)."""
        job = received.job
        try:
            broadcast = await self._store.get_broadcast(job.broadcast_id)
        except NotFound:
            logger.error(
                f"{self.kind} job of an unknown broadcast dropped", extra=job_fields(received)
            )
            await received.term()
            return
        if broadcast.bot != self._bot:  # nothing is done with the wrong bot
            await self._queue.publish_jobs(
                [
                    Job(
                        broadcast_id=job.broadcast_id,
                        user_ids=job.user_ids,
                        bot=broadcast.bot,
                        generation=job.generation,
                        recall=job.recall,
                        edit=job.edit,
                    )
                ]
            )
            await received.ack()
            return
        if received.num_delivered > 1:
            results = await self._store.results_among(job.broadcast_id, job.user_ids)
            if events := self._replayed(broadcast, results):
                await self._queue.publish_events(events)
        if not self._active(broadcast, job):
            await received.ack()
            return
        hold = Hold(
            self._claimer(broadcast),
            job,
            token=token,
            lease=self._lease,
            margin=self._heartbeat_interval,
        )
        stop = asyncio.Event()
        heartbeat = asyncio.create_task(
            keep_alive(received, hold, stop, interval=self._heartbeat_interval),
            name=f"{self.kind}-hb",
        )
        written = Outcomes(self, broadcast)
        try:
            busy = await hold.take()
            prepared = await self._prepare(broadcast, hold.held)
            started()
            outcomes = await asyncio.gather(
                *(self._one(broadcast, target, prepared, hold, written) for target in hold.held),
                return_exceptions=True,
            )
        finally:
            stop.set()
            await asyncio.gather(heartbeat, return_exceptions=True)
        left = [t.user_id for t in hold.held if t.user_id not in written.recorded]
        if left:
            with contextlib.suppress(Exception):
                await self._store.release_claims(job.broadcast_id, left, token=token)
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                logger.warning(
                    f"a {self.kind} of a recipient failed; the job comes back",
                    extra={**job_fields(received), "error": repr(outcome)},
                )
            elif isinstance(outcome, BaseException):
                raise outcome
        if busy or left:
            logger.info(
                f"{self.kind} job handed back: recipients in flight or held elsewhere",
                extra={**job_fields(received), "busy": busy, "unrecorded": len(left)},
            )
            await received.nak(
                delay=give_back_delay(self._limiter.parked_until(), self._heartbeat_interval)
            )
        else:
            await received.ack()
        await self._finish(broadcast)

    async def _one(
        self,
        broadcast: Broadcast,
        target: SentTarget,
        prepared: object,
        hold: Hold,
        outcomes: Outcomes[R],
    ) -> None:
        """One recipient's call and its outcome recorded (unless its hold lapsed). The call
        slot is held until the outcome is recorded: a worker that dies has at most
        ``concurrency`` calls answered (or being made) but not recorded — the duplicate bound."""
        async with self._calls:
            outcomes.calling += 1
            try:
                result = await self._outcome(broadcast, target, prepared, hold)
                if result is not None:
                    await outcomes.add(result, target)
            finally:
                outcomes.calling -= 1

    async def _call(
        self,
        broadcast: Broadcast,
        target: SentTarget,
        hold: Hold,
        call: Callable[[Gate], Awaitable[None]],
    ) -> TelegramError | bool:
        """Make ``call`` (passing it the gate to hand the sender) at a slot of the bot's
        budget until it is answered: True when it succeeded, False if the hold lapsed
        before it could be made, the final refusal (a :class:`PermanentError`) or the last
        transient error once every attempt failed."""
        attempts = 0
        while True:
            try:
                return await self._permitted(target, hold, call)
            except RateLimited as exc:  # not an attempt: every worker pauses, then again
                self._metrics.rate_limited.labels(bot=self._bot).inc()
                logger.warning(
                    f"rate limited by Telegram during a {self.kind}; pausing the bot on every "
                    "worker",
                    extra={
                        "bot": self._bot,
                        "broadcast_id": broadcast.id,
                        "retry_after": exc.retry_after,
                    },
                )
                await self._limiter.pause(exc.retry_after)
                await self._note_park(exc.retry_after)
            except PermanentError as exc:
                return exc
            except TelegramError as exc:
                attempts += 1
                if not exc.retryable or attempts >= self._max_attempts:
                    return exc
                ceiling = min(self._backoff_cap, self._backoff_base * 2**attempts)
                await asyncio.sleep(random.uniform(0, ceiling))

    async def _permitted(
        self, target: SentTarget, hold: Hold, call: Callable[[Gate], Awaitable[None]]
    ) -> bool:
        try:
            permit = await self._limiter.reserve(target.user_id)
        except Parked:  # the job gives its recipients back until the park ends
            return False

        async def gate() -> bool:
            if not hold.usable(target.user_id):
                return False
            try:
                await permit.use()
            except Parked:
                return False
            return hold.usable(target.user_id)

        try:
            await permit.approach()
            await call(gate)
        except NotSent:
            return False
        finally:
            permit.release()
        return True


def sent_result(broadcast_id: int, target: SentTarget, **follow_up: Any) -> DeliveryResult:
    """A sent recipient's delivery as its follow-up event carries it: its messages, when they
    were sent, and ``follow_up``'s fields (``recall``, ``edit``, ...)."""
    ids = target.message_ids
    return DeliveryResult(
        broadcast_id=broadcast_id,
        user_id=target.user_id,
        state=DeliveryState.SENT,
        finished_at=target.sent_at,
        message_id=ids[0] if ids else None,
        message_ids=ids if len(ids) > 1 else (),
        variant=target.variant,
        **follow_up,
    )


async def _ignore(_: float) -> None:
    return None


def give_back_delay(until: float | None, least: float) -> float:
    """How long a job handed back waits: until a park ending at ``until`` ends (and up to a
    second more, so that the jobs do not all come back at its first instant), or ``least``."""
    if until is None:
        return least
    return max(least, until - time.time() + random.uniform(0.0, 1.0))


LINGER = 0.01
"""Seconds a job's lone outcome waits for the others of the job holding a call slot before
it is written: at a paced rate (300 a second: an outcome every 3 ms) they come one at a time,
and each written alone was a transaction, a publish and a notice of its own. Its slot is held
that much longer (a follow-up has four per send slot: 128 by default, 128 ms each at 1000 a
second)."""


class Outcomes(Generic[R]):
    """A job's outcomes, recorded in groups: whoever finds the lock free writes every outcome
    waiting (one transaction, one publish), so while one group commits the next one gathers;
    one found alone while others of the job hold a call slot (their call made or being made)
    waits :data:`LINGER` for company first. An outcome is recorded before its recipient's
    ``add`` returns."""

    def __init__(self, jobs: FollowUpJobs[R], broadcast: Broadcast) -> None:
        self._jobs = jobs
        self._broadcast = broadcast
        self._waiting: list[tuple[R, SentTarget]] = []
        self._lock = asyncio.Lock()
        self.calling = 0
        """The job's recipients holding a call slot: their call made or being made, their
        outcome not yet recorded."""
        self.recorded: set[int] = set()
        """Recipients whose outcome is in SQL (this job's, or an earlier handling's)."""

    async def add(self, result: R, target: SentTarget) -> None:
        self._waiting.append((result, target))
        async with self._lock:
            if len(self._waiting) == 1 and self.calling > 1:
                # Alone while others of the job are calling: a moment for them to join.
                await asyncio.sleep(LINGER)
            group, self._waiting = self._waiting, []
            if group:  # else an earlier holder wrote this one with its group
                await self._write(group)

    async def _write(self, group: list[tuple[R, SentTarget]]) -> None:
        jobs = self._jobs
        written = await jobs._record([result for result, _ in group])
        self.recorded.update(target.user_id for _, target in group)
        events = [
            jobs._event(self._broadcast, result, target, written[target.user_id])
            for result, target in group
            if target.user_id in written
        ]
        if events:
            await jobs._queue.publish_events(events)
            broadcast = self._broadcast
            await jobs._queue.notify(Change(broadcast.id, broadcast.bot, ChangeKind.PROGRESS))


class Hold:
    """A follow-up job's claims on its sent recipients, usable while at least ``margin``
    seconds of the lease are left by this process's clock."""

    def __init__(
        self, claimer: Claimer, job: Job, *, token: str, lease: float, margin: float
    ) -> None:
        self._claimer = claimer
        self._job = job
        self._token = token
        self._lease = lease
        self._margin = margin
        self.held: tuple[SentTarget, ...] = ()
        self._holds: frozenset[int] = frozenset()
        self._usable_until = float("-inf")

    async def take(self) -> int:
        """Hold the job's sent recipients still to do; how many are busy elsewhere."""
        claim = await self._claim(self._job.user_ids)
        self.held = claim.held
        return claim.busy

    async def renew(self) -> None:
        """Extend the claims still held (recorded ones drop out; lost ones stay lost)."""
        await self._claim(sorted(self._holds))

    async def _claim(self, user_ids: Sequence[int]) -> SentClaim:
        started = time.monotonic()
        now = datetime.now(UTC)
        claim = await self._claimer(
            user_ids, self._token, now, now + timedelta(seconds=self._lease)
        )
        self._holds = frozenset(t.user_id for t in claim.held)
        self._usable_until = started + self._lease - self._margin
        return claim

    def usable(self, user_id: int) -> bool:
        """Whether a call for ``user_id`` may start now."""
        return user_id in self._holds and time.monotonic() < self._usable_until
