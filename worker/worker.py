"""The send loop: jobs from NATS, messages to Telegram, outcomes to SQL.

Guarantees (any number of worker processes, on any machines):

* A recipient is sent to only while its SQL state is PENDING: each job first asks SQL which of
  its recipients are still pending, so a duplicate or redelivered job sends nothing twice
  except sends that were in flight (or sent but not yet recorded) when a worker died.
* A job is acked only after every one of its recipients has a final outcome recorded in SQL
  and published as an event. A worker that dies leaves its jobs unacked; JetStream
  redelivers them after AckWait (a long job keeps itself alive with ``in_progress``).
* 429 answers pause this process's sending for ``retry_after`` and retry the same recipient;
  they never count as an attempt. Transient failures (5xx, network errors, timeouts, non-JSON
  answers) are retried with exponential backoff and full jitter up to ``max_attempts``;
  permanent refusals are final at once with Telegram's description.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime

from broadcasting.errors import ChatMigrated, PermanentError, RateLimited, TelegramError
from broadcasting.model import Content, DeliveryResult, DeliveryState
from broadcasting.queue import Queue, ReceivedJob, ResultEvent
from broadcasting.store import Store
from worker.ratelimit import Pacer
from worker.recorder import ResultRecorder
from worker.telegram import TelegramSender

logger = logging.getLogger(__name__)

CONTENT_CACHE = 256
MAX_MIGRATIONS = 2


class Worker:
    """Consumes the shared job queue until :meth:`stop`; then finishes the jobs in hand."""

    def __init__(
        self,
        *,
        store: Store,
        queue: Queue,
        sender: TelegramSender,
        recorder: ResultRecorder,
        pacer: Pacer,
        concurrency: int,
        max_attempts: int,
        heartbeat_interval: float = 20.0,
        poll_timeout: float = 0.25,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
    ) -> None:
        self._store = store
        self._queue = queue
        self._sender = sender
        self._recorder = recorder
        self._pacer = pacer
        self._sends = asyncio.Semaphore(concurrency)
        self._max_jobs = max(2, concurrency // 16)
        self._max_attempts = max_attempts
        self._heartbeat_interval = heartbeat_interval
        self._poll_timeout = poll_timeout
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._contents: OrderedDict[int, Content] = OrderedDict()
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
            content = await self._content(job.broadcast_id)
            pending = await self._store.pending_among(job.broadcast_id, job.user_ids)
            if received.num_delivered > 1:
                await self._republish(
                    job.broadcast_id, [u for u in job.user_ids if u not in pending]
                )
            await asyncio.gather(
                *(self._deliver(job.broadcast_id, user_id, content) for user_id in sorted(pending))
            )
            await received.ack()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception(
                "job failed; it will be redelivered",
                extra={"broadcast_id": job.broadcast_id, "error": repr(exc)},
            )
            try:
                await received.nak(delay=5.0)
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
        results = await self._store.results_among(broadcast_id, user_ids)
        if results:
            await self._queue.publish_events([ResultEvent(result=r) for r in results])

    async def _content(self, broadcast_id: int) -> Content:
        content = self._contents.get(broadcast_id)
        if content is None:
            content = (await self._store.get_broadcast(broadcast_id)).content
            self._contents[broadcast_id] = content
            if len(self._contents) > CONTENT_CACHE:
                self._contents.popitem(last=False)
        return content

    async def _deliver(self, broadcast_id: int, user_id: int, content: Content) -> None:
        result = await self._attempt(broadcast_id, user_id, content)
        await self._recorder.record(result)

    async def _attempt(self, broadcast_id: int, user_id: int, content: Content) -> DeliveryResult:
        chat_id = user_id
        attempts = 0
        migrations = 0
        while True:
            error: TelegramError
            async with self._sends:
                await self._pacer.acquire()
                try:
                    sent = await self._sender.send(chat_id, content)
                except RateLimited as exc:
                    self._pacer.pause(exc.retry_after)
                    logger.warning(
                        "rate limited by Telegram",
                        extra={"retry_after": exc.retry_after, "chat_id": chat_id},
                    )
                    continue
                except ChatMigrated as exc:
                    migrations += 1
                    if migrations > MAX_MIGRATIONS:
                        return _failed(broadcast_id, user_id, exc.description)
                    chat_id = exc.new_chat_id
                    continue
                except PermanentError as exc:
                    return _failed(broadcast_id, user_id, exc.description)
                except TelegramError as exc:
                    error = exc
                else:
                    return DeliveryResult(
                        broadcast_id=broadcast_id,
                        user_id=user_id,
                        state=DeliveryState.SENT,
                        message_id=sent.message_id,
                        finished_at=datetime.now(UTC),
                    )
            attempts += 1
            if attempts >= self._max_attempts:
                return _failed(broadcast_id, user_id, error.description)
            ceiling = min(self._backoff_cap, self._backoff_base * 2**attempts)
            logger.info(
                "transient send failure; retrying",
                extra={"chat_id": chat_id, "attempt": attempts, "error": error.description},
            )
            await asyncio.sleep(random.uniform(0, ceiling))


def _failed(broadcast_id: int, user_id: int, description: str) -> DeliveryResult:
    return DeliveryResult(
        broadcast_id=broadcast_id,
        user_id=user_id,
        state=DeliveryState.FAILED,
        error=description,
        finished_at=datetime.now(UTC),
    )
