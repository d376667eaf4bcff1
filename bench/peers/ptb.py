"""The python-telegram-bot peer: ``ExtBot`` with its ``AIORateLimiter``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from telegram.error import TelegramError
from telegram.ext import AIORateLimiter, ExtBot
from telegram.request import HTTPXRequest

from bench.peers.run import TEXT, PeerRun, Tally

MAX_RETRIES = 5


@asynccontextmanager
async def ptb_sender(
    api_url: str, token: str
) -> AsyncIterator[Callable[[PeerRun], Awaitable[Tally]]]:
    """Each run gets a new ``ExtBot`` (its limiter is built for the run's rate); the library
    is imported once, before ``ready``."""

    async def send(run: PeerRun) -> Tally:
        limiter = AIORateLimiter(
            overall_max_rate=run.rate, overall_time_period=1, max_retries=MAX_RETRIES
        )
        request = HTTPXRequest(connection_pool_size=run.concurrency, pool_timeout=30.0)
        bot: ExtBot[int] = ExtBot(
            token, base_url=f"{api_url}/bot", request=request, rate_limiter=limiter
        )
        async with bot:
            tally = Tally()
            queue: asyncio.Queue[int] = asyncio.Queue()
            for chat_id in run.recipients:
                queue.put_nowait(chat_id)

            async def sender() -> None:
                while not queue.empty():
                    chat_id = queue.get_nowait()
                    try:
                        await bot.send_message(chat_id, TEXT, allow_paid_broadcast=run.paid or None)
                        tally.sent += 1
                    except TelegramError:  # RetryAfter too, after MAX_RETRIES retries
                        tally.failed += 1

            await asyncio.gather(*(sender() for _ in range(run.concurrency)))
            tally.finished_at = time.time()
        return tally

    yield send
