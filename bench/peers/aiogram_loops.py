"""The aiogram peers: a paced loop, and concurrent sends that retry after a 429."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramAPIError, TelegramNetworkError, TelegramRetryAfter

from bench.peers.run import TEXT, PeerRun, Tally


@asynccontextmanager
async def aiogram_sender(
    api_url: str, token: str
) -> AsyncIterator[Callable[[PeerRun], Awaitable[Tally]]]:
    """aiogram's ``Bot`` on the simulator, and the function that runs one peer run."""
    session = AiohttpSession(api=TelegramAPIServer.from_base(api_url), limit=256)
    async with Bot(token, session=session) as bot:

        async def send(run: PeerRun) -> Tally:
            tally = Tally()
            paid = True if run.paid else None
            if run.kind == "aiogram-sleep":
                await _paced_loop(bot, run, tally, paid)
            else:
                await _retrying_sends(bot, run, tally, paid)
            tally.finished_at = time.time()
            return tally

        yield send


async def _paced_loop(bot: Bot, run: PeerRun, tally: Tally, paid: bool | None) -> None:
    """The loop of countless tutorials: send, sleep 1/rate, next; an error loses the user."""
    pause = 1.0 / run.rate
    for chat_id in run.recipients:
        try:
            await bot.send_message(chat_id, TEXT, allow_paid_broadcast=paid)
            tally.sent += 1
        except (TelegramAPIError, TelegramNetworkError):
            tally.failed += 1
        await asyncio.sleep(pause)


async def _retrying_sends(bot: Bot, run: PeerRun, tally: Tally, paid: bool | None) -> None:
    """``concurrency`` sends in flight, no pacing; a 429 waits ``retry_after`` and retries."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for chat_id in run.recipients:
        queue.put_nowait(chat_id)

    async def sender() -> None:
        while not queue.empty():
            chat_id = queue.get_nowait()
            while True:
                try:
                    await bot.send_message(chat_id, TEXT, allow_paid_broadcast=paid)
                    tally.sent += 1
                except TelegramRetryAfter as exc:
                    tally.retried += 1
                    await asyncio.sleep(exc.retry_after)
                    continue
                except (TelegramAPIError, TelegramNetworkError):
                    tally.failed += 1
                break

    await asyncio.gather(*(sender() for _ in range(run.concurrency)))
