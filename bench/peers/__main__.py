"""``python -m bench.peers``: one peer run (see :mod:`bench.peers`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence

from bench.peers.run import PeerOptions, Tally, run_peer

KINDS = ("aiogram-sleep", "aiogram-retry", "ptb")


def parse(argv: Sequence[str] | None = None) -> PeerOptions:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__)
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--api-url", required=True, help="the Bot API server (the simulator)")
    parser.add_argument("--token", required=True)
    parser.add_argument("--rate", type=float, default=30.0, help="messages per second allowed")
    parser.add_argument("--concurrency", type=int, default=32, help="sends in flight")
    parser.add_argument("--first", type=int, default=1, help="the first recipient's chat id")
    parser.add_argument("--count", type=int, required=True, help="recipients")
    parser.add_argument("--paid", action="store_true", help="allow_paid_broadcast=true")
    args = parser.parse_args(argv)
    return PeerOptions(
        kind=args.kind,
        api_url=args.api_url,
        token=args.token,
        rate=args.rate,
        concurrency=args.concurrency,
        recipients=tuple(range(args.first, args.first + args.count)),
        paid=args.paid,
    )


async def main(options: PeerOptions) -> None:
    loop = asyncio.get_running_loop()

    async def wait_for_go() -> None:
        await loop.run_in_executor(None, sys.stdin.readline)

    tally: Tally = await run_peer(options, ready=_ready, go=wait_for_go)
    print(
        json.dumps(
            {
                "kind": options.kind,
                "started_at": tally.started_at,
                "finished_at": tally.finished_at or time.time(),
                "sent": tally.sent,
                "failed": tally.failed,
                "retried": tally.retried,
            }
        ),
        flush=True,
    )


def _ready() -> None:
    print("ready", flush=True)


if __name__ == "__main__":
    asyncio.run(main(parse()))
