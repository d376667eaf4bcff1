"""Run the simulator alone: ``python -m tgbroadcast.simulator --host 127.0.0.1 --port 8081``.

Prints one line, ``Bot API simulator listening on http://HOST:PORT``, once it accepts
connections (``--port 0`` picks a free port: read it from that line), and exits cleanly
on SIGINT or SIGTERM.

The process keeps every call it answered (for ``/_sim/calls``): a full garbage collection
over them stalled it for up to 60 ms at 1000 calls per second, and the requests it read after
such a stall were counted in one burst — flood control then saw one second too full where
the sender had kept its pace. Once a second, what is alive is moved out of the collector's
sight (``gc.collect`` of the last second's objects, then ``gc.freeze``; reference counting
still frees what is frozen), so collections stay short.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Sequence

from tgbroadcast.simulator.chats import ChatState
from tgbroadcast.simulator.ratelimits import RateLimits
from tgbroadcast.simulator.server import Simulator

logger = logging.getLogger(__name__)

FREEZE_INTERVAL = 1.0
"""Seconds between ``gc.freeze`` calls (see the module's docs)."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tgbroadcast.simulator", description="Telegram Bot API simulator"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8081, help="port (0: a free one)")
    parser.add_argument(
        "--token",
        action="append",
        dest="tokens",
        metavar="TOKEN",
        help="accept only this token (repeatable); default: any well-formed token",
    )
    parser.add_argument(
        "--rate-limits",
        choices=("off", "telegram"),
        default="off",
        help="flood control: off, or Telegram's FAQ limits",
    )
    parser.add_argument(
        "--default-chat-state",
        choices=[state.value for state in ChatState if state is not ChatState.MIGRATED],
        default=ChatState.ACTIVE.value,
        help="what undeclared chats do",
    )
    parser.add_argument("--log-level", default="WARNING", help="logging level")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    limits = RateLimits.telegram() if args.rate_limits == "telegram" else RateLimits.off()
    async with Simulator(
        host=args.host,
        port=args.port,
        tokens=args.tokens,
        rate_limits=limits,
        default_chat_state=ChatState(args.default_chat_state),
    ) as sim:
        print(f"Bot API simulator listening on {sim.api_url}", flush=True)
        freezer = asyncio.create_task(_keep_collections_short(), name="gc-freeze")
        await stop.wait()
        freezer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await freezer
        logger.info("stopping")


async def _keep_collections_short() -> None:
    while True:
        await asyncio.sleep(FREEZE_INTERVAL)
        gc.collect()  # cheap: only the last second's objects are in sight; cycles go first
        gc.freeze()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        asyncio.run(serve(args))
    except OSError as exc:
        print(f"simulator: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
