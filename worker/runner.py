"""A worker with everything it owns, as one async context manager."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from tgbroadcast.core.config import Settings
from tgbroadcast.core.metrics import Metrics
from tgbroadcast.core.queue import Queue
from tgbroadcast.core.store import Store
from tgbroadcast.worker.delivery import Deliverer
from tgbroadcast.worker.ratelimit import RateLimiter
from tgbroadcast.worker.recorder import ResultRecorder
from tgbroadcast.worker.telegram import TelegramSender
from tgbroadcast.worker.worker import Worker

logger = logging.getLogger(__name__)


@asynccontextmanager
async def running_worker(
    settings: Settings,
    *,
    store: Store,
    queue: Queue,
    metrics: Metrics,
    drain_within: Callable[[], float] | None = None,
) -> AsyncIterator[Worker]:
    """A worker consuming jobs until the context exits; then it finishes the jobs in hand,
    for at most ``nats.ack_wait`` seconds or what ``drain_within()`` says is left of the
    process's shutdown grace, whichever is less."""
    token = settings.require_bot_token()
    bot_id = int(token.split(":", 1)[0])
    async with (
        TelegramSender(token=token, api_url=settings.telegram.api_url) as sender,
        RateLimiter(
            js=queue.jetstream,
            prefix=queue.names.prefix,
            bot_id=bot_id,
            rate=settings.telegram.rate_limit,
            paid_rate=settings.telegram.paid_rate_limit,
            margin=settings.telegram.rate_margin,
            active_broadcasts=store.count_active_broadcasts,
            replicas=queue.replicas,
        ) as limiter,
        ResultRecorder(store=store, queue=queue, metrics=metrics) as recorder,
    ):
        metrics.add_permit_source(lambda: (limiter.stats.permits, limiter.stats.paid_permits))
        deliverer = Deliverer(
            store=store,
            queue=queue,
            sender=sender,
            limiter=limiter,
            recorder=recorder,
            metrics=metrics,
            concurrency=settings.worker.concurrency,
            paid_concurrency=settings.worker.paid_concurrency,
            max_attempts=settings.worker.max_attempts,
            content_error_threshold=settings.worker.content_error_threshold,
            backoff_base=settings.worker.backoff_base,
            backoff_cap=settings.worker.backoff_cap,
        )
        worker = Worker(
            store=store,
            queue=queue,
            deliverer=deliverer,
            max_jobs=max(2, (settings.worker.concurrency + settings.worker.paid_concurrency) // 16),
            lease=settings.nats.ack_wait,
            heartbeat_interval=settings.nats.ack_wait / 3,
        )
        task = asyncio.create_task(worker.run(), name="worker")
        logger.info(
            "worker started",
            extra={
                "concurrency": settings.worker.concurrency,
                "paid_concurrency": settings.worker.paid_concurrency,
            },
        )
        try:
            yield worker
        finally:
            worker.stop()
            # Jobs in hand get until ack_wait to finish (a 429 pause or an outage can hold
            # them); then they are cancelled, and JetStream gives them to another worker.
            budget = settings.nats.ack_wait
            if drain_within is not None:
                budget = min(budget, drain_within())
            try:
                await asyncio.wait_for(task, budget)
            except TimeoutError:
                logger.warning("jobs in hand did not finish in time; left to other workers")
            await deliverer.aclose()
            logger.info("worker stopped")
