"""The send loop: jobs from NATS, messages to Telegram, outcomes to SQL.

Guarantees (any number of worker processes, on any machines):

* A recipient is sent to only while its SQL state is PENDING and the job holds it: each job first
  claims its pending recipients in SQL (:mod:`tgbroadcast.worker.claims`) and sends only to those it
  got. Two jobs never send to one recipient at once — a redelivered job while its first holder still
  works, a batch published twice, a resumed broadcast's new generation while the old one's sends are
  in flight; a recipient is sent twice only when its send was in flight (or sent but not yet
  recorded) in a worker that died, or Telegram's answer was lost.
* A job is acked only after each of its recipients is final in SQL (its outcome published as
  an event), or the broadcast stopped. Recipients another job holds are left to it: the job
  is handed back (``nak``) and looks again a heartbeat later; by then the holder recorded
  them, or released them, or died and its claims lapsed (a lease is AckWait), and this job
  claims them. A worker that dies leaves its jobs unacked; JetStream redelivers them after
  AckWait (a long job keeps itself alive with ``in_progress`` and renews its claims).
* A job of a broadcast that is final (completed, cancelled, or stopped by the content circuit
  breaker), paused, or resumed since the job was published (an older generation) sends
  nothing and is acked: a resume publishes the recipients still pending as a new generation
  (see :mod:`tgbroadcast.core.domain.states`).
* How one recipient is sent to — rate budget, 429s, retries, outcomes — is
  :mod:`tgbroadcast.worker.delivery`.
* A ``Worker`` serves one bot (its lane, :mod:`tgbroadcast.worker.lanes`): it fetches only that
  bot's jobs, from that bot's consumers, and sends them with that bot's deliverer. A job
  whose broadcast belongs to another bot (never published so; a hand-made one) is published
  again for its broadcast's bot and acked, never sent with this one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import tgbroadcast.core.tracing as tracing
from tgbroadcast.core.domain.access import DEFAULT_BOT
from tgbroadcast.core.domain.errors import NotFound
from tgbroadcast.core.domain.model import Broadcast
from tgbroadcast.core.domain.states import SENDABLE, generation
from tgbroadcast.core.queue import (
    DUPLICATE_WINDOW,
    JOB_SIZE,
    Job,
    Queue,
    ReceivedJob,
    ResultEvent,
)
from tgbroadcast.core.store import Store
from tgbroadcast.core.tasks import cancel_and_wait, wait_event
from tgbroadcast.worker.claims import ClaimTokens, JobClaims, job_fields, keep_alive
from tgbroadcast.worker.delivery import Deliverer
from tgbroadcast.worker.edit import Editor
from tgbroadcast.worker.followups import give_back_delay
from tgbroadcast.worker.recall import Recaller

logger = logging.getLogger(__name__)

REPUBLISH_WITHIN = DUPLICATE_WINDOW - 60.0
"""Seconds back a redelivered job re-publishes outcomes: inside JetStream's duplicate window."""


@dataclass(slots=True)
class _Tier:
    """A fetch loop's state: its jobs in hand, their recipients whose sends have not
    started yet (claiming, reading profiles), and the event that makes it look again (a job
    ended, a job's sends started, :meth:`Worker.stop`)."""

    jobs: int = 0
    starting: int = 0
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)


class Worker:
    """Consumes one bot's share of the job queue until :meth:`stop`; then finishes the jobs
    in hand."""

    def __init__(
        self,
        *,
        store: Store,
        queue: Queue,
        deliverer: Deliverer,
        max_jobs: int,
        bot: str = DEFAULT_BOT,
        prefetch: int = JOB_SIZE,
        lease: float = 60.0,
        heartbeat_interval: float = 20.0,
        poll_timeout: float = 0.25,
    ) -> None:
        """``max_jobs``: the most jobs of a tier in hand at once; ``prefetch``: another job of
        a tier is taken only while fewer of its recipients than this wait for a send slot
        (about a job's worth, so the sends never run dry and the jobs in hand stay a few
        seconds of the rate budget). ``bot``: whose jobs it takes (``deliverer`` sends as it).
        ``lease``: how long a job's claims on its recipients last unless renewed — the
        queue's AckWait. ``heartbeat_interval``: how often a job in hand reports
        ``in_progress`` and renews its claims (shorter than ``lease``; a third of it)."""
        if not 0 < heartbeat_interval < lease:
            raise ValueError("the heartbeat interval must be shorter than the lease")
        self._store = store
        self._queue = queue
        self._deliverer = deliverer
        self._recaller = deliverer.follow_up(
            Recaller, lease=lease, heartbeat_interval=heartbeat_interval
        )
        self._editor = deliverer.follow_up(
            Editor, lease=lease, heartbeat_interval=heartbeat_interval
        )
        self._bot = bot
        self._max_jobs = max_jobs
        self._prefetch = prefetch
        self._lease = lease
        self._tokens = ClaimTokens()
        self._heartbeat_interval = heartbeat_interval
        self._poll_timeout = poll_timeout
        self._stopping = asyncio.Event()
        self._tiers = {False: _Tier(), True: _Tier()}
        """The fetch loop's state per tier (``True``: paid broadcasts)."""

    def stop(self) -> None:
        """Take no new jobs; :meth:`run` returns once the jobs in hand are finished."""
        self._stopping.set()
        for tier in self._tiers.values():
            tier.wakeup.set()

    @property
    def bot(self) -> str:
        return self._bot

    async def run(self) -> None:
        """One fetch loop per tier: free and paid jobs come from consumers of their own, so
        neither budget waits behind the other's jobs."""
        active: set[asyncio.Task[None]] = set()
        loops = [
            asyncio.create_task(self._fetch(paid, active), name=f"fetch-{self._bot}-{name}")
            for paid, name in ((False, "free"), (True, "paid"))
        ]
        try:
            await asyncio.gather(*loops)
        except asyncio.CancelledError:
            for task in active:  # out of time (the runner's ack_wait): JetStream redelivers
                task.cancel()
            raise
        finally:
            await cancel_and_wait(*loops)
            if active:
                await asyncio.gather(*active, return_exceptions=True)

    async def _fetch(self, paid: bool, active: set[asyncio.Task[None]]) -> None:
        tier = self._tiers[paid]
        while not self._stopping.is_set():
            if (until := self._deliverer.park.until()) is not None:
                await self._wait_stopping(until - time.time())  # parked: no job is taken
                if self._deliverer.park.until() is None:
                    self._deliverer.park.over()
                continue
            # Enough recipients in hand that wait for a send slot (or will soon): take
            # another job only when they run low, so prefetch follows the send rate.
            if tier.jobs >= self._max_jobs:
                tier.wakeup.clear()
                await tier.wakeup.wait()
                continue
            if tier.jobs and self._deliverer.backlog(paid=paid) + tier.starting >= self._prefetch:
                tier.wakeup.clear()
                await self._wait_wakeup_or(paid, self._prefetch - tier.starting)
                continue
            try:
                jobs = await self._queue.fetch_jobs(
                    max_jobs=1, timeout=self._poll_timeout, paid=paid, bot=self._bot
                )
            except Exception as exc:
                logger.warning("fetching jobs failed", extra={"bot": self._bot, "error": repr(exc)})
                await self._wait_stopping(1.0)
                continue
            for received in jobs:
                tier.jobs += 1
                tier.starting += len(received.job.user_ids)
                task = tracing.create_task(
                    self._handle(received, tier),
                    name="job",
                    span_name="tgbroadcast.job",
                    attributes=_job_attributes(received),
                    parent=tracing.extract(received.headers),  # the dispatcher's trace
                    kind="consumer",
                )
                active.add(task)
                task.add_done_callback(self._finished(active, tier))

    def _finished(
        self, active: set[asyncio.Task[None]], tier: _Tier
    ) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            active.discard(task)
            tier.jobs -= 1
            tier.wakeup.set()

        return done

    async def _wait_wakeup_or(self, paid: bool, backlog: int) -> None:
        """Wait until fewer than ``backlog`` recipients of the tier wait for a send slot (if
        that is above zero), or the tier's next wakeup."""
        waits: list[asyncio.Future[object]] = [
            asyncio.ensure_future(self._tiers[paid].wakeup.wait())
        ]
        if backlog > 0:
            waits.append(asyncio.ensure_future(self._deliverer.backlog_below(backlog, paid=paid)))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    async def _wait_stopping(self, seconds: float) -> None:
        await wait_event(self._stopping, seconds)

    async def _handle(self, received: ReceivedJob, tier: _Tier) -> None:
        job = received.job
        if job.recall or job.edit:
            waiting = len(job.user_ids)  # in ``starting`` until its calls start

            def calls_started() -> None:
                nonlocal waiting
                tier.starting -= waiting
                waiting = 0
                tier.wakeup.set()  # the next job may be taken while these are deleted

            runner = self._recaller if job.recall else self._editor
            try:
                await runner.handle(received, token=self._tokens.next(), started=calls_started)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.exception(
                    f"{runner.kind} job failed; it will be redelivered",
                    extra={**job_fields(received), "error": repr(exc)},
                )
                with contextlib.suppress(Exception):
                    await received.nak(delay=min(60.0, 2.0**received.num_delivered))
            finally:
                calls_started()
            return
        claims = JobClaims(
            store=self._store,
            broadcast_id=job.broadcast_id,
            token=self._tokens.next(),
            lease=self._lease,
            margin=self._heartbeat_interval,
        )
        recorded: set[int] = set()
        not_started = len(job.user_ids)  # counted in ``_starting`` until the sends start

        def sends_started() -> None:
            nonlocal not_started
            tier.starting -= not_started
            not_started = 0
            tier.wakeup.set()

        stop_heartbeat = asyncio.Event()
        heartbeat = asyncio.create_task(
            keep_alive(received, claims, stop_heartbeat, interval=self._heartbeat_interval),
            name="job-heartbeat",
        )
        try:
            read_at = time.monotonic()
            broadcast = await self._store.get_broadcast(job.broadcast_id)
            self._deliverer.states.saw(broadcast, read_at=read_at)
            if broadcast.bot != self._bot:
                await self._hand_over(received, broadcast)
            elif broadcast.status.is_final:
                self._deliverer.forget(broadcast.id)
                await self._republish_final(received)
            elif broadcast.status not in SENDABLE or job.generation < generation(
                broadcast.resumed_at
            ):
                # Paused (its resume publishes the pending recipients again) or an older
                # generation (a newer one covers them): dropped, nothing sent.
                logger.info(
                    "job dropped: its broadcast is paused or was resumed since",
                    extra={**job_fields(received), "status": broadcast.status.value},
                )
                await self._republish_final(received)
            elif not await self._send(received, broadcast, claims, recorded, sends_started):
                await self._stop_heartbeat(heartbeat, stop_heartbeat)
                await self._release(claims, recorded)
                # Recipients another job holds, or whose claim this one lost, or the bot is
                # parked: look again (when the park ends).
                until = self._deliverer.park.until()
                await received.nak(delay=give_back_delay(until, self._heartbeat_interval))
                return
            await self._stop_heartbeat(heartbeat, stop_heartbeat)
            await self._release(claims, recorded)
            await received.ack()
        except asyncio.CancelledError:
            raise
        except NotFound:
            logger.error("job of an unknown broadcast dropped", extra=job_fields(received))
            await received.term()
        except Exception as exc:
            logger.exception(
                "job failed; it will be redelivered",
                extra={**job_fields(received), "error": repr(exc)},
            )
            await self._stop_heartbeat(heartbeat, stop_heartbeat)
            await self._release(claims, recorded)
            try:
                # Backing off: a database outage must not become a redelivery storm.
                await received.nak(delay=min(60.0, 2.0**received.num_delivered))
            except Exception as nak_exc:
                logger.warning("nak failed", extra={**job_fields(received), "error": repr(nak_exc)})
        finally:
            sends_started()
            heartbeat.cancel()

    async def _send(
        self,
        received: ReceivedJob,
        broadcast: Broadcast,
        claims: JobClaims,
        recorded: set[int],
        sends_started: Callable[[], None],
    ) -> bool:
        """Claim the job's recipients, send to those held and record them (adding them to
        ``recorded``); whether the job is done: every recipient final, or the broadcast
        stopped — not when another job holds some, or this one lost some."""
        job = received.job
        claimed = await claims.take(job.user_ids)
        if received.num_delivered > 1:
            final = set(job.user_ids) - claimed.held - claimed.busy
            await self._republish(job.broadcast_id, sorted(final))
        held = sorted(claimed.held)
        # Personalized, or variants by language: the batch's profiles in one query (unknown
        # users: fallbacks, and the default variants).
        profiles = {}
        by_language = any(variant.language_codes for variant in broadcast.variants)
        if (broadcast.content.options.personalize or by_language) and held:
            profiles = await self._store.profiles(held, bot=broadcast.bot)
        # Every send finishes (or fails) before the job is settled either way.
        sends_started()
        outcomes = await asyncio.gather(
            *(
                self._deliverer.deliver(broadcast, user_id, profiles.get(user_id), claims=claims)
                for user_id in held
            ),
            return_exceptions=True,
        )
        for user_id, outcome in zip(held, outcomes, strict=True):
            if outcome is True:
                recorded.add(user_id)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        if not claimed.busy and len(recorded) == len(held):
            return True
        # Read afresh: a job of the current generation is never dropped on stale news.
        latest = await self._store.get_broadcast(job.broadcast_id)
        if latest.status not in SENDABLE or job.generation < generation(latest.resumed_at):
            return True  # paused, cancelled, failed, completed or resumed: dropped
        logger.info(
            "job handed back: some recipients are held by another job or were lost",
            extra={
                **job_fields(received),
                "busy": len(claimed.busy),
                "unsent": len(held) - len(recorded),
                "claim_token": claims.token,
            },
        )
        return False

    async def _hand_over(self, received: ReceivedJob, broadcast: Broadcast) -> None:
        """Publish a job that reached this bot's consumer for its broadcast's own bot (the
        caller then acks it): nothing is sent with the wrong bot."""
        job = received.job
        logger.error(
            "job of another bot's broadcast: handed over to that bot",
            extra={**job_fields(received), "broadcast_bot": broadcast.bot},
        )
        await self._queue.publish_jobs(
            [
                Job(
                    broadcast_id=job.broadcast_id,
                    user_ids=job.user_ids,
                    generation=job.generation,
                    paid=job.paid,
                    bot=broadcast.bot,
                    recall=job.recall,
                )
            ]
        )

    async def _release(self, claims: JobClaims, recorded: set[int]) -> None:
        """Let another job take at once the recipients this one held but did not record (if
        this fails, the claims lapse within a lease)."""
        try:
            await claims.release(recorded)
        except Exception as exc:
            logger.warning("releasing claims failed", extra={"bot": self._bot, "error": repr(exc)})

    async def _stop_heartbeat(self, heartbeat: asyncio.Task[None], stop: asyncio.Event) -> None:
        """Let a renewal in progress finish (a release must not be followed by a renewal)."""
        stop.set()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(heartbeat), self._heartbeat_interval)
        heartbeat.cancel()

    async def _republish_final(self, received: ReceivedJob) -> None:
        if received.num_delivered > 1:
            job = received.job
            pending = await self._store.pending_among(job.broadcast_id, job.user_ids)
            await self._republish(job.broadcast_id, [u for u in job.user_ids if u not in pending])

    async def _republish(self, broadcast_id: int, user_ids: list[int]) -> None:
        """Publish again the events of recipients a previous delivery of this job recorded but
        may have died before publishing (JetStream drops the ones it already has)."""
        if not user_ids:
            return
        # Older events were published, or JetStream would no longer drop them as duplicates.
        since = datetime.now(UTC) - timedelta(seconds=REPUBLISH_WITHIN)
        results = [
            r
            for r in await self._store.results_among(broadcast_id, user_ids)
            if r.finished_at > since
        ]
        if results:
            await self._queue.publish_events([ResultEvent(result=r) for r in results])


def _job_attributes(received: ReceivedJob) -> dict[str, str | int | bool]:
    """What a job's span says about it (no recipient ids)."""
    return {
        tracing.BROADCAST_ID: received.job.broadcast_id,
        "tgbroadcast.recipients": len(received.job.user_ids),
        "tgbroadcast.paid": received.job.paid,
        "tgbroadcast.bot": received.job.bot,
        "messaging.system": "nats",
        "tgbroadcast.delivery_count": received.num_delivered,
    }
