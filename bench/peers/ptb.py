"""The python-telegram-bot peer: ``ExtBot`` with its ``AIORateLimiter``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from telegram.error import RetryAfter, TelegramError
from telegram.ext import AIORateLimiter, ExtBot
from telegram.request import HTTPXRequest

from bench.peers.run import TEXT, PeerOptions, Tally

MAX_RETRIES = 5


async def send_with_ptb(
    options: PeerOptions, *, ready: Callable[[], None], go: Callable[[], Awaitable[None]]
) -> Tally:
    limiter = AIORateLimiter(
        overall_max_rate=options.rate, overall_time_period=1, max_retries=MAX_RETRIES
    )
    request = HTTPXRequest(connection_pool_size=options.concurrency, pool_timeout=30.0)
    bot: ExtBot[int] = ExtBot(
        options.token,
        base_url=f"{options.api_url}/bot",
        request=request,
        rate_limiter=limiter,
    )
    async with bot:
        ready()
        await go()
        tally = Tally()
        queue: asyncio.Queue[int] = asyncio.Queue()
        for chat_id in options.recipients:
            queue.put_nowait(chat_id)

        async def sender() -> None:
            while not queue.empty():
                chat_id = queue.get_nowait()
                try:
                    await bot.send_message(chat_id, TEXT, allow_paid_broadcast=options.paid or None)
                    tally.sent += 1
                except RetryAfter:
                    tally.failed += 1  # still limited after MAX_RETRIES retries
                except TelegramError:
                    tally.failed += 1

        await asyncio.gather(*(sender() for _ in range(options.concurrency)))
        tally.finished_at = time.time()
        return tally
