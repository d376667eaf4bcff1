"""A worker-like process for ``tests/test_chat_pacing.py``: sends to shared chats.

Run as ``python -m tests.chat_pacing_probe --url URL --prefix P --bot-id N --chats 1,2,-3
--rounds R --chat-interval S --group-interval S --active-broadcasts K`` from the repository
root. It speaks JSON lines on stdout: ``{"ready": true}`` once its limiter is up; then it
reads one line from stdin, the wall-clock second to start at; then, for every chat at once,
``rounds`` acquires in a row, each reported as ``{"chat": c, "permit": t}`` (``t`` is
``time.time()`` right after ``acquire`` returned); last ``{"stats": {...}}``. Its count of
sending broadcasts is always ``K``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time

import nats

from tgbroadcast.worker.clock import sleep_until
from tgbroadcast.worker.ratelimit import RateLimiter


def _emit(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def _run(args: argparse.Namespace) -> None:
    active: int = args.active_broadcasts

    async def active_broadcasts() -> int:
        return active

    nc = await nats.connect(args.url, allow_reconnect=False)
    try:
        limiter = RateLimiter(
            js=nc.jetstream(),
            prefix=args.prefix,
            bot_id=args.bot_id,
            rate=100,
            chat_interval=args.chat_interval,
            group_interval=args.group_interval,
            active_broadcasts=active_broadcasts,
        )
        async with limiter:
            _emit({"ready": True})
            start = float(await asyncio.to_thread(sys.stdin.readline))

            async def send(chat_id: int) -> None:
                for _ in range(args.rounds):
                    await limiter.acquire(chat_id)
                    _emit({"chat": chat_id, "permit": time.time()})

            await sleep_until(start)
            await asyncio.gather(*(send(int(c)) for c in args.chats.split(",")))
            _emit({"stats": dataclasses.asdict(limiter.stats)})
    finally:
        await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--bot-id", type=int, required=True)
    parser.add_argument("--chats", required=True)
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--chat-interval", type=float, required=True)
    parser.add_argument("--group-interval", type=float, required=True)
    parser.add_argument("--active-broadcasts", type=int, required=True)
    asyncio.run(_run(parser.parse_args()))


if __name__ == "__main__":
    main()
