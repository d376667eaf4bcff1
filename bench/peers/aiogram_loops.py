"""The aiogram peers: a paced loop, and concurrent sends that retry after a 429."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramAPIError, TelegramNetworkError, TelegramRetryAfter

from bench.peers.run import TEXT, PeerOptions, Tally


async def send_with_aiogram(
    options: PeerOptions, *, ready: Callable[[], None], go: Callable[[], Awaitable[None]]
) -> Tally:
    session = AiohttpSession(api=TelegramAPIServer.from_base(options.api_url), limit=256)
    async with Bot(options.token, session=session) as bot:
        ready()
        await go()
        tally = Tally()
        paid = True if options.paid else None
        if options.kind == "aiogram-sleep":
            await _paced_loop(bot, options, tally, paid)
        else:
            await _retrying_sends(bot, options, tally, paid)
        tally.finished_at = time.time()
        return tally


async def _paced_loop(bot: Bot, options: PeerOptions, tally: Tally, paid: bool | None) -> None:
    """The loop of countless tutorials: send, sleep 1/rate, next; an error loses the user."""
    pause = 1.0 / options.rate
    for chat_id in options.recipients:
        try:
            await bot.send_message(chat_id, TEXT, allow_paid_broadcast=paid)
            tally.sent += 1
        except (TelegramAPIError, TelegramNetworkError):
            tally.failed += 1
        await asyncio.sleep(pause)


async def _retrying_sends(bot: Bot, options: PeerOptions, tally: Tally, paid: bool | None) -> None:
    """``concurrency`` sends in flight, no pacing; a 429 waits ``retry_after`` and retries."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for chat_id in options.recipients:
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

    await asyncio.gather(*(sender() for _ in range(options.concurrency)))
