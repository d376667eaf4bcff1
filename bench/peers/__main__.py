"""``python -m bench.peers``: a peer process serving runs (see :mod:`bench.peers`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence

from bench.peers.run import PeerRun, Tally

Sender = Callable[[PeerRun], Awaitable[Tally]]


async def serve(send: Sender) -> None:
    """Print ``ready``, then answer each command line on stdin with a result line."""
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        tally = await send(PeerRun.from_json(json.loads(line)))
        print(json.dumps(tally.to_json()), flush=True)


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__)
    parser.add_argument("library", choices=("aiogram", "ptb"))
    parser.add_argument("--api-url", required=True, help="the Bot API server (the simulator)")
    parser.add_argument("--token", required=True)
    args = parser.parse_args(argv)
    if args.library == "ptb":
        from bench.peers.ptb import ptb_sender

        async with ptb_sender(args.api_url, args.token) as send:
            await serve(send)
    else:
        from bench.peers.aiogram_loops import aiogram_sender

        async with aiogram_sender(args.api_url, args.token) as send:
            await serve(send)


if __name__ == "__main__":
    asyncio.run(main())
