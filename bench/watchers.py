"""``python -m bench.watchers``: many gRPC ``WatchBroadcast`` (or SSE) streams in one process.

Run as ``python -m bench.watchers --target HOST:PORT --token T --count N --out FILE``
(``--sse http://HOST:PORT`` for Server-Sent Events instead). It connects, prints ``ready``,
reads a broadcast id from stdin, opens ``N`` streams on it at once and follows each to its
end. Then it writes ``FILE`` (JSON): per watcher the outcomes it got,
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
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
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


async def follow_sse(session: aiohttp.ClientSession, url: str, lags: list[int]) -> dict[str, Any]:
    """One SSE watcher, to the end of its stream."""
    results = 0
    users: set[int] = set()
    status = "none"
    error = ""
    event = ""
    try:
        async with session.get(url) as response:
            if response.status != 200:
                return {"results": 0, "distinct": 0, "status": status, "error": response.status}
            async for raw in response.content:
                line = raw.rstrip(b"\r\n")
                if line.startswith(b"event: "):
                    event = line[7:].decode()
                elif line.startswith(b"data: "):
                    data = json.loads(line[6:])
                    if event == "result":
                        now = time.time()
                        done = datetime.fromisoformat(data["finished_at"]).timestamp()
                        lags.append(round((now - done) * 1000))
                        results += 1
                        users.add(data["user_id"])
                    elif event == "end":
                        status = "BROADCAST_STATUS_" + data["progress"]["status"].upper()
                    elif event in ("error", "shutdown"):
                        error = f"{event}: {data['detail']}"
    except aiohttp.ClientError as exc:
        error = repr(exc)
    return {"results": results, "distinct": len(users), "status": status, "error": error}


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.watchers", description=__doc__)
    parser.add_argument("--target", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sse", help="the HTTP base URL: SSE streams instead of gRPC")
    args = parser.parse_args(argv)
    if args.sse:
        await _main_sse(args)
        return
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


async def _main_sse(args: argparse.Namespace) -> None:
    headers = {"Authorization": f"Bearer {args.token}"}
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(
        headers=headers, connector=connector, timeout=timeout
    ) as session:
        print("ready", flush=True)
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        url = f"{args.sse}/v1/broadcasts/{int(line)}/events"
        lags: list[int] = []
        watchers = await asyncio.gather(
            *(follow_sse(session, url, lags) for _ in range(args.count))
        )
    args.out.write_text(json.dumps({"watchers": watchers, "lags_ms": lags}), encoding="utf-8")
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
