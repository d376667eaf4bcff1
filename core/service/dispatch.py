"""Fan-out: turning a stored broadcast into jobs on the queue.

Guarantees:

* A broadcast's jobs cover every recipient that was PENDING when it was dispatched, in
  batches of ``batch_size`` ascending user ids, read from SQL page by page (a million
  recipients never sit in memory at once). Batches are cut from all recipients whatever their
  state, so every dispatch of a broadcast cuts the same batches and publishes the same job
  ids; batches whose recipients are all final are skipped.
* ``dispatched`` is set in SQL only after every job of the broadcast was acknowledged by
  JetStream. Until then the broadcast is dispatched again: after a NATS error (with backoff,
  forever — NATS being down pauses sending, it loses nothing), at every start of a server, and
  by the rescuer sweep every ``sweep_interval`` seconds, which takes over broadcasts left
  undispatched for ``stale_after`` seconds (a server killed right after answering 202: any
  other server, or the same one restarted, finishes its fan-out). A second dispatch can
  publish a recipient twice; workers skip recipients already final in SQL, so that costs a
  little work and never a second message (a recipient is sent only by the job holding its
  claim, see :mod:`tgbroadcast.worker.claims`).
* Up to :data:`FAN_OUTS` broadcasts are published at once, in about the order they were handed
  over (a group's big broadcasts wait for their slots beside later groups), so a broadcast to a
  few users (of any bot) is not held behind the fan-out of a million.
* A broadcast handed over by the request that created it comes with its recipients (up to
  :data:`HANDED_PER_BROADCAST` each, :data:`HANDED_IN_ALL` for all those waiting) and as it
  was committed: its first send jobs are cut from them — the same batches and job ids as
  from SQL, where every recipient of a new broadcast is ``PENDING`` — instead of read back;
  one that fits in one job is not read back at all. Any later dispatch of it (a retry, a
  resume, a rescue) reads SQL. (A broadcast moved by another request meanwhile — paused,
  cancelled — may get its first job all the same, as it may when it moves just after a read:
  workers send only to recipients still ``PENDING`` in a sendable broadcast of the job's
  generation.)
* Broadcasts handed over while every fan-out is busy are taken together (up to
  :data:`GROUP`): the sendable ones among them that fit in one job and have no edit to
  publish — a server answering many small sends — are read in one query (those handed over
  by their creator not at all), published in one pipelined batch and marked ``dispatched``
  in one transaction, with the same jobs and job ids
  as one by one; the others, and all of them if that fails, are published one by one as below.
  With tracing on, every broadcast is published on its own (its span is its jobs' parent).
* Only ``queued`` and ``running`` broadcasts are published: scheduled ones wait for the
  :mod:`~tgbroadcast.core.background.scheduler`, paused ones for their resume, final ones never. A
  resumed broadcast's pending recipients are published at once as a new generation of jobs (distinct
  ``Nats-Msg-Id``s; see :mod:`tgbroadcast.core.domain.states`) — recipients whose sends from before
  the pause are still in flight are held by their old job, which records them, and the new jobs
  leave them alone. ``dispatched`` is set only if no other resume came in between, else the newer
  generation is published too. The dispatcher never waits for a broadcast.
* An edited broadcast's *edit jobs* (:mod:`tgbroadcast.worker.edit`) are cut the same way, from
  the recipients whose messages carry older content, once ``EDIT_SETTLE`` seconds have passed
  since the edit (until then the broadcast is handed back to the dispatcher that late, and
  ``dispatched`` stays unset, so a server that dies meanwhile leaves it to the rescuer); an
  edited sendable broadcast also gets its new generation of send jobs at once.
* A ``recalling`` broadcast's recall jobs (:mod:`tgbroadcast.worker.recall`) are cut the same
  way, from the recipients still to recall, once ``RECALL_SETTLE`` seconds have passed since
  the recall (the API hands it over that late; a rescued one waits out the rest).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import tgbroadcast.core.tracing as tracing
from tgbroadcast.core.domain import states
from tgbroadcast.core.domain.errors import NotFound
from tgbroadcast.core.domain.model import Broadcast, BroadcastStatus
from tgbroadcast.core.queue import JOB_SIZE, Change, ChangeKind, FinishedEvent, Job, Queue
from tgbroadcast.core.store import SmallBroadcast, Store
from tgbroadcast.core.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

JOBS_PER_PUBLISH = 500
FAN_OUTS = 4
"""Broadcasts published at once by one dispatcher (each reads its recipients a page at a
time, holding a database connection only for the page's query)."""
GROUP = 200
"""Broadcasts handed over while every fan-out was busy, taken together: the small ones among
them are published with one read, one publish and one write (:meth:`Dispatcher._publish_small`)."""
HANDED_PER_BROADCAST = 100_000
"""Recipients handed over with a broadcast are kept for its first dispatch up to this many
(a sorted copy of them is made there; a bigger broadcast's are read from SQL page by page)."""
HANDED_IN_ALL = 1_000_000
"""... and up to this many for all the broadcasts waiting to be dispatched."""


def _fresh(broadcast: Broadcast) -> bool:
    """Whether a broadcast's dispatch is only its send jobs (sendable, no edit to publish)."""
    return broadcast.status in states.SENDABLE and not broadcast.editing


def _send_job(broadcast: Broadcast, user_ids: tuple[int, ...]) -> Job:
    """The send job of a batch of the broadcast's current generation (one by one or in a
    group: the same job, so the same ``Nats-Msg-Id``)."""
    return Job(
        broadcast_id=broadcast.id,
        user_ids=user_ids,
        generation=states.generation(broadcast.resumed_at),
        paid=broadcast.content.allow_paid_broadcast,
        bot=broadcast.bot,
    )


async def _cut(recipients: Sequence[int], batch_size: int) -> AsyncIterator[tuple[int, ...]]:
    """``recipients`` ascending, cut as :meth:`~.store.Store.job_batches` cuts a broadcast's
    recipients when every one of them is ``PENDING``."""
    ordered = sorted(recipients)
    for start in range(0, len(ordered), batch_size):
        yield tuple(ordered[start : start + batch_size])


class Dispatcher(AbstractAsyncContextManager["Dispatcher"]):
    """Publishes the jobs of broadcasts handed to :meth:`dispatch`, in the background."""

    def __init__(
        self,
        *,
        store: Store,
        queue: Queue,
        batch_size: int = JOB_SIZE,
        retry_delay: float = 1.0,
        max_retry_delay: float = 30.0,
        sweep_interval: float = 15.0,
        stale_after: float = 60.0,
        concurrency: int = FAN_OUTS,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be positive, not {concurrency}")
        self._concurrency = concurrency
        self._store = store
        self._queue = queue
        self._batch_size = batch_size
        self._retry_delay = retry_delay
        self._max_retry_delay = max_retry_delay
        self._sweep_interval = sweep_interval
        self._stale_after = stale_after
        self._todo: asyncio.Queue[int] = asyncio.Queue()
        self._queued: set[int] = set()
        self._again: set[int] = set()
        self._traces: dict[int, tracing.Context] = {}
        """The trace of each queued broadcast's latest :meth:`dispatch` (when traced)."""
        self._handed: dict[int, Sequence[int]] = {}
        """Recipients handed over with queued broadcasts (see :meth:`dispatch`)."""
        self._handed_count = 0
        self._created: dict[int, Broadcast] = {}
        """Broadcasts whose recipients are kept in ``_handed``, as their creator committed
        them."""
        self._task: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    async def __aenter__(self) -> Dispatcher:
        undispatched = await self._store.undispatched_broadcasts()
        self._task = asyncio.create_task(self._run(), name="dispatcher")
        for broadcast_id in undispatched:
            logger.info("re-dispatching broadcast", extra={"broadcast_id": broadcast_id})
            self.dispatch(broadcast_id)
        self._sweeper = asyncio.create_task(self._sweep(), name="dispatch-rescuer")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._queued:  # a drain stops them; the broadcasts stay undispatched in SQL
            logger.warning(
                "stopping with broadcasts not yet dispatched; a server dispatches them (at "
                "its start, or its rescuer's next sweep)",
                extra={"broadcasts": len(self._queued), "first": min(self._queued)},
            )
        await cancel_and_wait(self._sweeper, self._task)
        self._task = self._sweeper = None

    def dispatch(
        self,
        broadcast_id: int,
        *,
        recipients: Sequence[int] | None = None,
        created: Broadcast | None = None,
    ) -> None:
        """Queue a stored broadcast for publishing; returns at once. A broadcast being
        published right now is published once more afterwards (it may have been resumed).

        ``recipients``: every recipient of a broadcast the caller has just created and
        committed (distinct ids, any order, all still ``PENDING``): its first send jobs are
        cut from them instead of read back from SQL, when few enough are waiting.
        ``created``: that broadcast as the caller committed it (with ``recipients``): if they
        fit in one job, it is published without reading it back."""
        if (parent := tracing.capture()) is not None:  # its publishing continues this trace
            self._traces[broadcast_id] = parent
        if broadcast_id in self._queued:
            self._again.add(broadcast_id)
            return
        if (
            recipients
            and len(recipients) <= HANDED_PER_BROADCAST
            and self._handed_count + len(recipients) <= HANDED_IN_ALL
        ):
            self._handed[broadcast_id] = recipients
            self._handed_count += len(recipients)
            fits = len(recipients) <= self._batch_size  # (only a group's publish uses it)
            if created is not None and created.id == broadcast_id and fits:
                self._created[broadcast_id] = created
        self._queued.add(broadcast_id)
        self._idle.clear()
        self._todo.put_nowait(broadcast_id)

    async def wait_idle(self) -> None:
        """Until everything handed to :meth:`dispatch` so far is published."""
        await self._idle.wait()

    async def _run(self) -> None:
        """Up to ``concurrency`` fan-outs at once, in the order handed over: a small
        broadcast is not held behind the fan-out of a million recipients. The broadcasts
        handed over while every slot was busy are taken together, as one group."""
        slots = asyncio.Semaphore(self._concurrency)
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                group = [await self._todo.get()]
                await slots.acquire()
                while len(group) < GROUP and not self._todo.empty():
                    group.append(self._todo.get_nowait())
                self._start(running, self._dispatch_group(group, slots, running), group[0])
        finally:
            await cancel_and_wait(*running)

    @staticmethod
    def _start(
        running: set[asyncio.Task[None]], work: Coroutine[Any, Any, None], broadcast_id: int
    ) -> None:
        task = asyncio.create_task(work, name=f"dispatch-{broadcast_id}")
        running.add(task)
        task.add_done_callback(running.discard)

    async def _dispatch_group(
        self, group: list[int], slots: asyncio.Semaphore, running: set[asyncio.Task[None]]
    ) -> None:
        """Publish the group's fresh small broadcasts together (:meth:`_publish_small`), then
        each of the others on its own, in a slot of its own (the group's passes to the
        first)."""
        done: set[int] = set()
        try:
            # Traced, each broadcast's dispatch is a span of its own, its jobs' parent.
            if not tracing.enabled():
                done = await self._publish_small(group)
        except asyncio.CancelledError:
            slots.release()
            raise
        except Exception as exc:
            logger.warning(
                "dispatching a group failed; dispatching each on its own",
                extra={"broadcasts": len(group), "error": repr(exc)},
            )
            for broadcast_id in group:  # each is read on its own from now on
                self._created.pop(broadcast_id, None)
        rest: list[int] = []
        for broadcast_id in group:
            if broadcast_id not in done:
                rest.append(broadcast_id)
            elif broadcast_id in self._again:  # handed over again meanwhile: once more
                self._again.discard(broadcast_id)
                rest.append(broadcast_id)
            else:
                self._finished(broadcast_id)
        if not rest:
            slots.release()
            return
        for index, broadcast_id in enumerate(rest):
            if index:
                await slots.acquire()
            self._start(running, self._dispatch(broadcast_id, slots), broadcast_id)

    async def _publish_small(self, group: list[int]) -> set[int]:
        """Publish the jobs of the group's sendable broadcasts that fit in one job and are
        not being edited, with one read (none for those handed over by their creator), one
        publish and one write for them all; the ids dispatched. The others (and any of these
        resumed meanwhile) are left to :meth:`_dispatch`."""
        known = {s.broadcast.id: s for i in group if (s := self._created_small(i)) is not None}
        unread = [i for i in group if i not in known]
        if unread:
            read = await self._store.small_broadcasts(
                unread, max_recipients=self._batch_size, eligible=_fresh
            )
            known.update((s.broadcast.id, s) for s in read)
        small = [known[i] for i in group if i in known]
        if not small:
            return set()
        jobs = [_send_job(s.broadcast, s.recipients) for s in small if s.pending]
        if jobs:
            await self._queue.publish_jobs(jobs)
        marked = await self._store.mark_generations_dispatched(
            [(s.broadcast.id, s.broadcast.resumed_at) for s in small]
        )
        for s in small:
            if s.broadcast.id in marked:
                self._log_dispatched(s.broadcast, len(s.recipients) if s.pending else 0)
        return marked

    async def _dispatch(self, broadcast_id: int, slots: asyncio.Semaphore) -> None:
        """Publish one broadcast (again while it was handed over meanwhile), retrying
        forever; then its slot is free."""
        try:
            while True:
                await self._publish_retrying(broadcast_id)
                if broadcast_id not in self._again:
                    break
                self._again.discard(broadcast_id)
        finally:
            slots.release()
        self._finished(broadcast_id)

    def _finished(self, broadcast_id: int) -> None:
        self._queued.discard(broadcast_id)
        self._take_handed(broadcast_id)
        if not self._queued:
            self._idle.set()

    async def _publish_retrying(self, broadcast_id: int) -> None:
        parent = self._traces.pop(broadcast_id, None)
        delay = self._retry_delay
        while True:
            try:
                await tracing.traced(
                    self._publish(broadcast_id),
                    "tgbroadcast.dispatch",
                    {tracing.BROADCAST_ID: broadcast_id},
                    parent=parent,
                )
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning(
                    "dispatch failed; retrying",
                    extra={"broadcast_id": broadcast_id, "error": repr(exc), "delay": delay},
                )
                await asyncio.sleep(random.uniform(0, delay))
                delay = min(delay * 2, self._max_retry_delay)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval)
            try:
                before = datetime.now(UTC) - timedelta(seconds=self._stale_after)
                stale = await self._store.undispatched_broadcasts(created_before=before)
            except Exception as exc:
                logger.warning("rescuer sweep failed", extra={"error": repr(exc)})
                continue
            for broadcast_id in stale:
                if broadcast_id not in self._queued:
                    logger.warning(
                        "rescuing a broadcast left undispatched",
                        extra={"broadcast_id": broadcast_id},
                    )
                    self.dispatch(broadcast_id)

    async def _publish(self, broadcast_id: int) -> None:
        while True:
            try:
                broadcast = await self._store.get_broadcast(broadcast_id)
            except NotFound:
                logger.error(
                    "not dispatching an unknown broadcast", extra={"broadcast_id": broadcast_id}
                )
                return
            if broadcast.status is BroadcastStatus.RECALLING:
                await self._publish_recall(broadcast)
                return
            sendable = broadcast.status in states.SENDABLE
            if not sendable and not broadcast.editing:
                # Scheduled ones start with the scheduler, paused ones on resume; final: never.
                logger.info(
                    "not dispatching a broadcast that is not sendable",
                    extra={"broadcast_id": broadcast_id, "status": broadcast.status.value},
                )
                return
            count = await self._publish_sends(broadcast) if sendable else 0
            if broadcast.editing and not await self._publish_edit(broadcast):
                return  # dispatched again once the edit has settled
            if await self._store.mark_generation_dispatched(broadcast_id, broadcast.resumed_at):
                self._log_dispatched(broadcast, count)
                return
            # Resumed or edited while this generation was published: publish the new one.

    @staticmethod
    def _log_dispatched(broadcast: Broadcast, count: int) -> None:
        logger.info(
            "broadcast dispatched",
            extra={
                "broadcast_id": broadcast.id,
                "queued": count,
                "generation": states.generation(broadcast.resumed_at),
                "bot": broadcast.bot,
            },
        )

    def _created_small(self, broadcast_id: int) -> SmallBroadcast | None:
        """A broadcast handed over by its creator, as a group's read would find it if it
        fits in one job: sendable, its first generation, every recipient ``PENDING``."""
        created = self._created.get(broadcast_id)
        handed = self._handed.get(broadcast_id)
        if (
            created is None
            or handed is None
            or not _fresh(created)
            or created.resumed_at is not None
            or not 0 < len(handed) == created.total <= self._batch_size
        ):
            return None
        return SmallBroadcast(broadcast=created, recipients=tuple(sorted(handed)), pending=True)

    def _take_handed(self, broadcast_id: int) -> Sequence[int] | None:
        """The recipients handed over with the broadcast, if any, no longer kept."""
        self._created.pop(broadcast_id, None)
        handed = self._handed.pop(broadcast_id, None)
        if handed is not None:
            self._handed_count -= len(handed)
        return handed

    async def _publish_sends(self, broadcast: Broadcast) -> int:
        """Publish the jobs of a sendable broadcast's current generation; how many
        recipients they cover."""
        jobs: list[Job] = []
        count = 0
        handed = self._take_handed(broadcast.id)
        batches = (
            _cut(handed, self._batch_size)
            # Its first generation, all of it: every recipient is PENDING before its jobs.
            if handed is not None
            and broadcast.resumed_at is None
            and len(handed) == broadcast.total
            else self._store.job_batches(broadcast.id, batch_size=self._batch_size)
        )
        async for user_ids in batches:
            jobs.append(_send_job(broadcast, user_ids))
            count += len(user_ids)
            if len(jobs) >= JOBS_PER_PUBLISH:
                await self._queue.publish_jobs(jobs)
                jobs = []
        if jobs:
            await self._queue.publish_jobs(jobs)
        tracing.set_attributes({"tgbroadcast.recipients": count})
        return count

    async def _publish_edit(self, broadcast: Broadcast) -> bool:
        """Publish the edit jobs of an edited broadcast's latest version once every worker
        has seen the edit (:data:`~tgbroadcast.core.domain.states.EDIT_SETTLE`; earlier, the
        broadcast is dispatched again then and False is returned); the edit ends at once when
        nobody is left to edit."""
        assert broadcast.edit_at is not None
        settle = states.EDIT_SETTLE - (datetime.now(UTC) - broadcast.edit_at).total_seconds()
        if settle > 0:
            asyncio.get_running_loop().call_later(settle, self.dispatch, broadcast.id)
            return False
        now = datetime.now(UTC)
        version = broadcast.content_version
        # Each dispatch its own job ids: one that opens again (a send of the old content
        # recorded late) must not be dropped as a duplicate of the first.
        round_ = states.generation(now)
        jobs: list[Job] = []
        count = 0
        batches = self._store.edit_batches(
            broadcast.id, version=version, batch_size=self._batch_size, now=now
        )
        async for user_ids in batches:
            jobs.append(
                Job(
                    broadcast_id=broadcast.id,
                    user_ids=user_ids,
                    bot=broadcast.bot,
                    edit=version,
                    generation=round_,
                )
            )
            count += 1
            if len(jobs) >= JOBS_PER_PUBLISH:
                await self._queue.publish_jobs(jobs)
                jobs = []
        if jobs:
            await self._queue.publish_jobs(jobs)
        logger.info(
            "edit dispatched",
            extra={
                "broadcast_id": broadcast.id,
                "jobs": count,
                "version": version,
                "bot": broadcast.bot,
            },
        )
        await self._store.finish_edit(broadcast.id, version=version, now=now)
        return True

    async def _publish_recall(self, broadcast: Broadcast) -> None:
        """Publish a recalling broadcast's recall jobs, once every worker has seen the status
        (:data:`~tgbroadcast.core.domain.states.RECALL_SETTLE`); the broadcast is ``recalled``
        at once when nobody is left to recall."""
        assert broadcast.recall_at is not None
        settle = states.RECALL_SETTLE - (datetime.now(UTC) - broadcast.recall_at).total_seconds()
        if settle > 0:
            await asyncio.sleep(settle)
        now = datetime.now(UTC)
        jobs: list[Job] = []
        count = 0
        batches = self._store.recall_batches(broadcast.id, batch_size=self._batch_size, now=now)
        async for user_ids in batches:
            jobs.append(
                Job(broadcast_id=broadcast.id, user_ids=user_ids, bot=broadcast.bot, recall=True)
            )
            count += 1
            if len(jobs) >= JOBS_PER_PUBLISH:
                await self._queue.publish_jobs(jobs)
                jobs = []
        if jobs:
            await self._queue.publish_jobs(jobs)
        await self._store.mark_generation_dispatched(broadcast.id, broadcast.resumed_at)
        logger.info(
            "recall dispatched",
            extra={"broadcast_id": broadcast.id, "jobs": count, "bot": broadcast.bot},
        )
        if await self._store.finish_recall(broadcast.id, now=now) is not None:
            await self._queue.publish_events(
                [FinishedEvent(broadcast_id=broadcast.id, status=BroadcastStatus.RECALLED)]
            )
            await self._queue.notify(Change(broadcast.id, broadcast.bot, ChangeKind.STATUS))
