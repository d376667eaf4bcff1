"""Group commit of delivery outcomes: SQL first, then the events stream.

Guarantees:

* :meth:`ResultRecorder.record` returns only after the outcome is committed in SQL *and* its
  event (plus the broadcast's finished event, when it completed it) was acknowledged by
  JetStream. A worker acks a job only after every outcome of it was recorded this way.
* Outcomes from many concurrent sends are written in one transaction (up to ``max_batch``),
  which is what lets SQLite keep up with hundreds of sends per second. A commit takes the
  outcomes that arrived while the previous one ran: none waits for company, since a send
  slot is held until its outcome is recorded.
* Each commit then tells list watchers which broadcasts it changed: one change notice per
  broadcast (:mod:`tgbroadcast.core.queue.changes`; at most once, never retried).
* One recorder per bot's lane: its outcomes count in that bot's metrics
  (``tgb_messages_total{bot}``) and its logs carry the bot's name.
* A database or NATS outage does not lose outcomes already in hand: the write is retried
  with capped backoff until it succeeds or the worker is stopped. If the process dies first,
  the job is redelivered and the unrecorded recipients are sent again — the duplicate bound
  stated in docs/design.md#delivery-guarantees.
* The events of a commit are published (in commit order, by a task of their own) before the
  next commit begins — the outcomes arriving meanwhile make its batch — except while their
  publishing fails: then later outcomes are still committed, so a worker stopped during a
  NATS outage leaves them recorded (its jobs, unacked, are redelivered and send nothing
  twice) instead of sending them once more. The redelivered job publishes again the events
  of outcomes recorded in the last ``REPUBLISH_WITHIN`` (9 minutes: JetStream's window for
  dropping duplicates); after a longer outage, the watchers of such a broadcast miss those
  events (a watch closes with its database counters, logging them missing).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TypeVar

from tgbroadcast.core.domain.access import DEFAULT_BOT
from tgbroadcast.core.domain.model import DeliveryResult
from tgbroadcast.core.metrics import Metrics
from tgbroadcast.core.queue import Change, ChangeKind, Event, FinishedEvent, Queue, ResultEvent
from tgbroadcast.core.store import Recorded, Store
from tgbroadcast.core.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

A = TypeVar("A")
T = TypeVar("T")


class ResultRecorder(AbstractAsyncContextManager["ResultRecorder"]):
    def __init__(
        self,
        *,
        store: Store,
        queue: Queue,
        metrics: Metrics,
        max_batch: int = 500,
        retry_delay: float = 0.2,
        max_retry_delay: float = 10.0,
        bot: str = DEFAULT_BOT,
    ) -> None:
        self._bot = bot
        self._store = store
        self._queue = queue
        self._metrics = metrics
        self._max_batch = max_batch
        self._retry_delay = retry_delay
        self._max_retry_delay = max_retry_delay
        self._waiting: list[tuple[DeliveryResult, asyncio.Future[None]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._written: asyncio.Queue[tuple[Recorded, list[asyncio.Future[None]]]] = asyncio.Queue()
        """Commits whose events are still to publish, in commit order, with their callers."""
        self._announcer: asyncio.Task[None] | None = None
        self._announcing: tuple[Recorded, list[asyncio.Future[None]]] | None = None
        """The commit whose events are being published."""
        self._writing: list[tuple[DeliveryResult, asyncio.Future[None]]] = []
        """The batch being committed."""
        self._may_write = asyncio.Event()
        """Set when the next commit may begin: every commit's events are published, or their
        publishing is failing (``_stalled``)."""
        self._may_write.set()
        self._stalled = False

    async def __aenter__(self) -> ResultRecorder:
        self._task = asyncio.create_task(self._run(), name="result-recorder")
        self._announcer = asyncio.create_task(self._announce_all(), name="result-announcer")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await cancel_and_wait(self._task, self._announcer)
        futures = [future for _, future in self._writing + self._waiting]
        if self._announcing is not None:
            futures += self._announcing[1]
        while not self._written.empty():
            futures += self._written.get_nowait()[1]
        for future in futures:
            if not future.done():
                future.set_exception(RuntimeError("recorder stopped"))
        self._waiting.clear()

    async def record(self, result: DeliveryResult) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((result, future))
        self._wakeup.set()
        await future

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            if not self._waiting:  # all taken by the previous batch
                self._wakeup.clear()
                continue
            self._wakeup.clear()
            while self._waiting:
                await self._may_write.wait()  # the batch: what arrived until then
                batch = self._writing = self._waiting[: self._max_batch]
                del self._waiting[: self._max_batch]
                recorded = await self._write([result for result, _ in batch])
                self._written.put_nowait((recorded, [future for _, future in batch]))
                self._writing = []
                if not self._stalled:
                    self._may_write.clear()

    async def _announce_all(self) -> None:
        """Publish each commit's events, in commit order; then its callers return."""
        while True:
            recorded, futures = self._announcing = await self._written.get()
            await self._announce(recorded)
            for future in futures:
                if not future.done():
                    future.set_result(None)
            self._announcing = None
            if self._written.empty():
                self._may_write.set()

    async def _write(self, results: list[DeliveryResult]) -> Recorded:
        recorded = await self._retrying("record outcomes", self._store.record_results, results)
        outcomes = Counter(result.state.value for result in recorded.recorded)
        for outcome, count in outcomes.items():
            self._metrics.messages.labels(outcome=outcome, bot=self._bot).inc(count)
        return recorded

    async def _announce(self, recorded: Recorded) -> None:
        events: list[Event] = [
            ResultEvent(result=result, ordinal=ordinal)
            for result, ordinal in zip(recorded.recorded, recorded.ordinals, strict=True)
        ]
        events += [
            FinishedEvent(broadcast_id=broadcast.id, status=broadcast.status)
            for broadcast in recorded.finished
        ]
        if events:
            await self._retrying(
                "publish events", self._queue.publish_events, events, on_failure=self._stall
            )
            self._stalled = False
        # List watchers: the finished broadcasts moved; the others' counters did (at most one
        # notice per broadcast per commit; the API servers read each at a bounded rate).
        finished = {broadcast.id for broadcast in recorded.finished}
        moved = {r.broadcast_id for r in recorded.recorded} - finished
        await self._queue.notify(
            *(Change(b, self._bot, ChangeKind.STATUS) for b in sorted(finished)),
            *(Change(b, self._bot, ChangeKind.PROGRESS) for b in sorted(moved)),
        )
        for broadcast in recorded.finished:
            logger.info(
                "broadcast finished",
                extra={
                    "bot": self._bot,
                    "broadcast_id": broadcast.id,
                    "status": broadcast.status.value,
                    "sent": broadcast.sent,
                    "failed": broadcast.failed,
                },
            )

    def _stall(self) -> None:
        """The events' publishing failed: commits go on without waiting for it."""
        self._stalled = True
        self._may_write.set()

    async def _retrying(
        self,
        what: str,
        call: Callable[[A], Awaitable[T]],
        arg: A,
        *,
        on_failure: Callable[[], None] | None = None,
    ) -> T:
        delay = self._retry_delay
        while True:
            try:
                return await call(arg)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if on_failure is not None:
                    on_failure()
                logger.warning(
                    "%s failed; retrying",
                    what,
                    extra={"bot": self._bot, "error": repr(exc), "delay": delay},
                )
                await asyncio.sleep(random.uniform(delay / 2, delay))
                delay = min(delay * 2, self._max_retry_delay)
