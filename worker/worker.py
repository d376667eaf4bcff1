"""The send loop: jobs from NATS, messages to Telegram, outcomes to SQL.

Guarantees (any number of worker processes, on any machines):

* A recipient is sent to only while its SQL state is PENDING: each job first asks SQL which of
  its recipients are still pending, so a duplicate or redelivered job sends nothing twice
  except sends that were in flight (or sent but not yet recorded) when a worker died.
* A job is acked only after every one of its recipients has a final outcome recorded in SQL
  and published as an event. A worker that dies leaves its jobs unacked; JetStream
  redelivers them after AckWait (a long job keeps itself alive with ``in_progress``).
* A job of a broadcast that is final (completed, cancelled, or stopped by the content circuit
  breaker), paused, or resumed since the job was published (an older generation) sends
  nothing and is acked: a resume publishes the recipients still pending as a new generation
  (see :mod:`broadcasting.lifecycle`).
* How one recipient is sent to — rate budget, 429s, retries, outcomes — is
  :mod:`worker.delivery`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from broadcasting.errors import NotFound
from broadcasting.lifecycle import SENDABLE, generation
from broadcasting.queue import DUPLICATE_WINDOW, Queue, ReceivedJob, ResultEvent
from broadcasting.store import Store
from worker.delivery import Deliverer

logger = logging.getLogger(__name__)

REPUBLISH_WITHIN = DUPLICATE_WINDOW - 60.0
"""Seconds back a redelivered job re-publishes outcomes: inside JetStream's duplicate window."""


class Worker:
    """Consumes the shared job queue until :meth:`stop`; then finishes the jobs in hand."""

    def __init__(
        self,
        *,
        store: Store,
        queue: Queue,
        deliverer: Deliverer,
        max_jobs: int,
        heartbeat_interval: float = 20.0,
        poll_timeout: float = 0.25,
    ) -> None:
        self._store = store
        self._queue = queue
        self._deliverer = deliverer
        self._max_jobs = max_jobs
        self._heartbeat_interval = heartbeat_interval
        self._poll_timeout = poll_timeout
        self._stopping = asyncio.Event()
        self._job_done = asyncio.Event()

    def stop(self) -> None:
        """Take no new jobs; :meth:`run` returns once the jobs in hand are finished."""
        self._stopping.set()
        self._job_done.set()

    async def run(self) -> None:
        active: set[asyncio.Task[None]] = set()
        try:
            while not self._stopping.is_set():
                free = self._max_jobs - len(active)
                if free <= 0:
                    self._job_done.clear()
                    await self._job_done.wait()
                    continue
                try:
                    jobs = await self._queue.fetch_jobs(max_jobs=free, timeout=self._poll_timeout)
                except Exception as exc:
                    logger.warning("fetching jobs failed", extra={"error": repr(exc)})
                    await self._wait_stopping(1.0)
                    continue
                for received in jobs:
                    task = asyncio.create_task(self._handle(received), name="job")
                    active.add(task)
                    task.add_done_callback(self._finished(active))
        finally:
            if active:
                await asyncio.gather(*active, return_exceptions=True)

    def _finished(self, active: set[asyncio.Task[None]]) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            active.discard(task)
            self._job_done.set()

        return done

    async def _wait_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _handle(self, received: ReceivedJob) -> None:
        job = received.job
        heartbeat = asyncio.create_task(self._keep_alive(received), name="job-heartbeat")
        try:
            broadcast = await self._store.get_broadcast(job.broadcast_id)
            pending = await self._store.pending_among(job.broadcast_id, job.user_ids)
            if received.num_delivered > 1:
                await self._republish(
                    job.broadcast_id, [u for u in job.user_ids if u not in pending]
                )
            if broadcast.status.is_final:
                self._deliverer.forget(broadcast.id)
            elif broadcast.status not in SENDABLE or job.generation < generation(
                broadcast.resumed_at
            ):
                # Paused (its resume publishes the pending recipients again) or an older
                # generation (a newer one covers them): dropped, nothing sent.
                logger.info(
                    "job dropped: its broadcast is paused or was resumed since",
                    extra={"broadcast_id": job.broadcast_id, "status": broadcast.status.value},
                )
            else:
                # Personalized: the batch's profiles in one query (unknown users: fallbacks).
                profiles = {}
                if broadcast.content.options.personalize:
                    profiles = await self._store.profiles(sorted(pending))
                # Every send finishes (or fails) before the job is settled either way.
                outcomes = await asyncio.gather(
                    *(
                        self._deliverer.deliver(broadcast, user_id, profiles.get(user_id))
                        for user_id in sorted(pending)
                    ),
                    return_exceptions=True,
                )
                for outcome in outcomes:
                    if isinstance(outcome, BaseException):
                        raise outcome
            await received.ack()
        except asyncio.CancelledError:
            raise
        except NotFound:
            logger.error("job of an unknown broadcast dropped", extra={"job": repr(job)})
            await received.term()
        except Exception as exc:
            logger.exception(
                "job failed; it will be redelivered",
                extra={"broadcast_id": job.broadcast_id, "error": repr(exc)},
            )
            try:
                # Backing off: a database outage must not become a redelivery storm.
                await received.nak(delay=min(60.0, 2.0**received.num_delivered))
            except Exception as nak_exc:
                logger.warning("nak failed", extra={"error": repr(nak_exc)})
        finally:
            heartbeat.cancel()

    async def _keep_alive(self, received: ReceivedJob) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_interval)
            try:
                await received.in_progress()
            except Exception as exc:
                logger.warning("job heartbeat failed", extra={"error": repr(exc)})

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
