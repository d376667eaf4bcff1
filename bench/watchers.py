"""``python -m bench.watchers``: many gRPC ``WatchBroadcast`` streams in one process.

Run as ``python -m bench.watchers --target HOST:PORT --token T --count N --out FILE``. It
connects, prints ``ready``, reads a broadcast id from stdin, opens ``N`` streams on it at once
and follows each to its end. Then it writes ``FILE`` (JSON): per watcher the outcomes it got,
the distinct recipients among them and the final status; and every outcome's lag in
milliseconds — the time it arrived minus the outcome's ``finished_at`` (stamped by the worker
when Telegram answered).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from tgbroadcast.v1 import broadcast_pb2 as pb
from tgbroadcast.v1 import broadcast_pb2_grpc as pb_grpc


async def follow(
    stub: pb_grpc.BroadcastServiceAsyncStub,
    broadcast_id: int,
    metadata: tuple[tuple[str, str], ...],
    lags: list[int],
) -> dict[str, Any]:
    """One watcher, to the end of its stream."""
    results = 0
    users: set[int] = set()
    status = "none"
    error = ""
    try:
        call = stub.WatchBroadcast(
            pb.WatchBroadcastRequest(broadcast_id=broadcast_id), metadata=metadata
        )
        async for message in call:
            if message.HasField("result"):
                now = time.time()
                done = message.result.finished_at
                lags.append(round((now - done.seconds - done.nanos / 1e9) * 1000))
                results += 1
                users.add(message.result.user_id)
            else:
                status = pb.BroadcastStatus.Name(message.progress.status)
    except grpc.aio.AioRpcError as exc:
        error = f"{exc.code().name}: {exc.details()}"
    return {"results": results, "distinct": len(users), "status": status, "error": error}


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.watchers", description=__doc__)
    parser.add_argument("--target", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    metadata = (("authorization", f"Bearer {args.token}"),)
    async with grpc.aio.insecure_channel(args.target) as channel:
        await channel.channel_ready()
        stub = pb_grpc.BroadcastServiceStub(channel)
        print("ready", flush=True)
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        broadcast_id = int(line)
        lags: list[int] = []
        watchers = await asyncio.gather(
            *(follow(stub, broadcast_id, metadata, lags) for _ in range(args.count))
        )
    args.out.write_text(json.dumps({"watchers": watchers, "lags_ms": lags}), encoding="utf-8")
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
