"""A worker with everything it owns, as one async context manager."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from broadcasting.config import Settings
from broadcasting.queue import Queue
from broadcasting.store import Store
from worker.ratelimit import Pacer
from worker.recorder import ResultRecorder
from worker.telegram import TelegramSender
from worker.worker import Worker

logger = logging.getLogger(__name__)


@asynccontextmanager
async def running_worker(
    settings: Settings, *, store: Store, queue: Queue
) -> AsyncIterator[Worker]:
    """A worker consuming jobs until the context exits; then it finishes the jobs in hand."""
    token = settings.require_bot_token()
    async with (
        TelegramSender(token=token, api_url=settings.telegram.api_url) as sender,
        ResultRecorder(store=store, queue=queue) as recorder,
    ):
        worker = Worker(
            store=store,
            queue=queue,
            sender=sender,
            recorder=recorder,
            pacer=Pacer(settings.telegram.rate_limit),
            concurrency=settings.worker.concurrency,
            max_attempts=settings.worker.max_attempts,
        )
        task = asyncio.create_task(worker.run(), name="worker")
        logger.info("worker started", extra={"concurrency": settings.worker.concurrency})
        try:
            yield worker
        finally:
            worker.stop()
            await task
            logger.info("worker stopped")
