"""Starting scheduled broadcasts on time.

Guarantees:

* A ``SCHEDULED`` broadcast is moved to ``QUEUED`` and handed to the
  :class:`~tgbroadcast.core.service.dispatch.Dispatcher` within ``poll_interval`` seconds (one by
  default) of its ``send_at``, by whichever server's scheduler sees it first: the move is one
  conditional update, so with several servers each broadcast is started once.
* Broadcasts that came due while no server ran start as soon as one starts (the scheduler
  runs once on entering, before the API takes requests).
* A server that dies between the move and the dispatch leaves a ``QUEUED``, undispatched
  broadcast: the dispatcher's start-up pass and rescuer sweep publish it.
* A scheduled broadcast that was cancelled is never started.
* Each start is announced (:mod:`tgbroadcast.core.service.announcing`) when the scheduler
  has the ``queue``: its watchers see it ``queued``, list watchers see it move.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from types import TracebackType

from tgbroadcast.core.domain.errors import FailedPrecondition, NotFound
from tgbroadcast.core.domain.states import Command
from tgbroadcast.core.queue import ChangeKind, Queue
from tgbroadcast.core.service.announcing import announce
from tgbroadcast.core.service.dispatch import Dispatcher
from tgbroadcast.core.store import Store
from tgbroadcast.core.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

DUE_PER_POLL = 100
"""Broadcasts started per query; a poll repeats the query while it finds this many."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Scheduler(AbstractAsyncContextManager["Scheduler"]):
    """Polls for due scheduled broadcasts every ``poll_interval`` seconds, by ``clock``."""

    def __init__(
        self,
        *,
        store: Store,
        dispatcher: Dispatcher,
        poll_interval: float = 1.0,
        clock: Callable[[], datetime] = _utc_now,
        queue: Queue | None = None,
    ) -> None:
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, not {poll_interval}")
        self._store = store
        self._dispatcher = dispatcher
        self._poll_interval = poll_interval
        self._clock = clock
        self._queue = queue
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Scheduler:
        await self._poll_logged()
        self._task = asyncio.create_task(self._run(), name="scheduler")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def start_due(self) -> list[int]:
        """Start every broadcast due now; the ids this call started."""
        started: list[int] = []
        while True:
            due = await self._store.due_broadcasts(self._clock(), limit=DUE_PER_POLL)
            for broadcast_id in due:
                try:
                    started_one = await self._store.move_broadcast(broadcast_id, Command.START)
                except (FailedPrecondition, NotFound):
                    continue  # cancelled meanwhile, or started by another server
                logger.info("scheduled broadcast started", extra={"broadcast_id": broadcast_id})
                if self._queue is not None:
                    await announce(self._queue, started_one, ChangeKind.STATUS)
                self._dispatcher.dispatch(broadcast_id)
                started.append(broadcast_id)
            if len(due) < DUE_PER_POLL:
                return started

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval)
            await self._poll_logged()

    async def _poll_logged(self) -> None:
        try:
            await self.start_due()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the database is down: the next poll tries again
            logger.warning("starting scheduled broadcasts failed", extra={"error": repr(exc)})
