"""A worker with everything it owns, as one async context manager: a lane per bot."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from tgbroadcast.core.config import Settings
from tgbroadcast.core.metrics import Metrics
from tgbroadcast.core.queue import Queue
from tgbroadcast.core.store import Store
from tgbroadcast.core.tasks import cancel_and_wait
from tgbroadcast.worker.aiogram_models import build_models
from tgbroadcast.worker.lanes import BOT_REFRESH_INTERVAL, Bots, Lanes

logger = logging.getLogger(__name__)


@asynccontextmanager
async def running_worker(
    settings: Settings,
    *,
    store: Store,
    queue: Queue,
    metrics: Metrics,
    bots: Bots,
    drain_within: Callable[[], float] | None = None,
    refresh_interval: float = BOT_REFRESH_INTERVAL,
) -> AsyncIterator[Lanes]:
    """A worker sending with every bot of ``bots`` (a lane each, :mod:`.lanes`; the bots
    are refreshed every ``refresh_interval`` seconds) until the context exits; then it
    finishes the jobs in hand, for at most ``nats.ack_wait`` seconds or what
    ``drain_within()`` says is left of the process's shutdown grace, whichever is less.
    With no bot yet, it waits for one."""
    build_models()  # before the first job, not in the middle of its first sends
    lanes = Lanes(
        settings,
        store=store,
        queue=queue,
        metrics=metrics,
        bots=bots,
        refresh_interval=refresh_interval,
    )
    following = asyncio.create_task(lanes.run(), name="worker-lanes")
    logger.info(
        "worker started",
        extra={
            "concurrency": settings.worker.concurrency,
            "paid_concurrency": settings.worker.paid_concurrency,
        },
    )
    try:
        yield lanes
    finally:
        lanes.stop()
        await cancel_and_wait(following)
        # Jobs in hand get until ack_wait to finish (a 429 pause or an outage can hold
        # them); then they are cancelled, and JetStream gives them to another worker.
        budget = settings.nats.ack_wait
        if drain_within is not None:
            budget = min(budget, drain_within())
        await lanes.drain(budget)
        logger.info("worker stopped")
