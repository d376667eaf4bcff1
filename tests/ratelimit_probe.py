"""A worker-like process for ``tests/test_ratelimit.py``: takes permits as fast as allowed.

Run as ``python -m tests.ratelimit_probe --url URL --prefix P --bot-id N --rate R
--duration S --tasks T`` from the repository root. It speaks JSON lines on stdout:
``{"ready": true}`` once its limiter is up; then it reads one line from stdin, the wall-clock
second to start at; then ``{"permit": t}`` for every permit (``t`` is ``time.time()`` right
after ``acquire`` returned) until ``start + duration``; last ``{"stats": {...}}``.
Every permit is for a chat of its own, so only the bot's budget paces it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import json
import os
import sys
import time

import nats

from tgbroadcast.worker.ratelimit import RateLimiter


def _emit(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def _run(args: argparse.Namespace) -> None:
    nc = await nats.connect(args.url, allow_reconnect=False)
    try:
        limiter = RateLimiter(
            js=nc.jetstream(), prefix=args.prefix, bot_id=args.bot_id, rate=args.rate
        )
        async with limiter:
            _emit({"ready": True})
            start = float(await asyncio.to_thread(sys.stdin.readline))
            end = start + args.duration
            chat_ids = itertools.count(os.getpid() * 1_000_000 + 1)

            async def take() -> None:
                while True:
                    await limiter.acquire(next(chat_ids))
                    _emit({"permit": time.time()})

            while (delay := start - time.time()) > 0:  # noqa: ASYNC110 - a clock, not an event
                await asyncio.sleep(delay)
            tasks = [asyncio.create_task(take()) for _ in range(args.tasks)]
            await asyncio.sleep(max(0.0, end - time.time()))
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            _emit({"stats": dataclasses.asdict(limiter.stats)})
    finally:
        await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--bot-id", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--tasks", type=int, default=20)
    asyncio.run(_run(parser.parse_args()))


if __name__ == "__main__":
    main()
