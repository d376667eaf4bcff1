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
import re
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
    max_batch: int = 0,
) -> dict[str, Any]:
    """One watcher, to the end of its stream (``max_batch``: up to that many outcomes per
    message)."""
    results = messages = 0
    users: set[int] = set()
    status = "none"
    error = ""
    try:
        call = stub.WatchBroadcast(
            pb.WatchBroadcastRequest(broadcast_id=broadcast_id, max_batch=max_batch),
            metadata=metadata,
        )
        async for message in call:
            messages += 1
            outcomes = message.results or ([message.result] if message.HasField("result") else [])
            if not outcomes:
                status = pb.BroadcastStatus.Name(message.progress.status)
            now = time.time()
            for outcome in outcomes:
                done = outcome.finished_at
                lags.append(round((now - done.seconds - done.nanos / 1e9) * 1000))
                results += 1
                users.add(outcome.user_id)
    except grpc.aio.AioRpcError as exc:
        error = f"{exc.code().name}: {exc.details()}"
    return {
        "results": results,
        "distinct": len(users),
        "status": status,
        "error": error,
        "messages": messages,
    }


_RESULT = re.compile(rb'event: result\ndata: \{"user_id":(\d+),[^\n]*?"finished_at":"([^"]+)"')
"""A result event's user id and ``finished_at`` (the service's compact JSON, user id first)."""
_OTHER = re.compile(rb"event: (end|error|shutdown)\ndata: ([^\n]*)")


async def follow_sse(session: aiohttp.ClientSession, url: str, lags: list[int]) -> dict[str, Any]:
    """One SSE watcher, to the end of its stream. The events are picked out of each chunk
    read with two regular expressions: a client parsing line by line in Python used as much
    CPU as the server streaming to it, on the same two cores."""
    results = 0
    users: set[int] = set()
    status = "none"
    error = ""
    try:
        async with session.get(url) as response:
            if response.status != 200:
                return {"results": 0, "distinct": 0, "status": status, "error": response.status}
            buffer = b""
            async for chunk in response.content.iter_any():
                buffer += chunk
                cut = buffer.rfind(b"\n\n")
                if cut < 0:
                    continue
                block, buffer = buffer[:cut], buffer[cut + 2 :]
                now = time.time()
                for match in _RESULT.finditer(block):
                    done = datetime.fromisoformat(match[2].decode()).timestamp()
                    lags.append(round((now - done) * 1000))
                    results += 1
                    users.add(int(match[1]))
                for match in _OTHER.finditer(block):
                    data = json.loads(match[2])
                    if match[1] == b"end":
                        status = "BROADCAST_STATUS_" + data["progress"]["status"].upper()
                    else:
                        error = f"{match[1].decode()}: {data['detail']}"
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
    parser.add_argument(
        "--max-batch", type=int, default=0, help="gRPC: up to this many outcomes per message"
    )
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
            *(follow(stub, broadcast_id, metadata, lags, args.max_batch) for _ in range(args.count))
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
