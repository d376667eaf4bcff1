"""A drain that never hangs: SIGTERM to a real `tgbroadcast run` with watch streams open.

Every SSE stream gets ``event: shutdown`` and ends, every gRPC ``WatchBroadcast`` ends
``UNAVAILABLE`` ("server shutting down"), readiness fails (or the port is closed already),
and the process exits 0 — the orderly path finished before the watchdog that ends it at
``server.shutdown_grace`` — although a client holds a request open by never sending its body.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import grpc

from tests.fixtures.environ import API_TOKEN, local_storage, service_environ
from tests.fixtures.processes import TGBROADCAST, spawn, wait_healthy
from tests.fixtures.streams import (
    WatchCall,
    grpc_accepted,
    open_grpc_watch,
    open_sse,
    scheduled_broadcast,
)
from tgbroadcast.simulator import Simulator

STREAMS = 20
GRACE = 20.0
EXIT_OVERRAN = 1


async def sse_rest(response: aiohttp.ClientResponse) -> bytes:
    """What the stream sends until the server ends it."""
    return await response.content.read()


async def grpc_end(call: WatchCall) -> tuple[grpc.StatusCode, str]:
    with contextlib.suppress(grpc.aio.AioRpcError):
        async for _ in call:
            pass
    return await call.code(), await call.details()


async def readiness_after_drain_began(http_url: str) -> int | None:
    """``/readyz``'s status, or None when the port is closed already."""
    try:
        async with aiohttp.ClientSession() as session, session.get(http_url + "/readyz") as answer:
            return answer.status
    except aiohttp.ClientConnectionError:
        return None


@contextlib.asynccontextmanager
async def held_request(port: int) -> AsyncIterator[None]:
    """A send whose body never comes: the server is handling it (it answered ``100
    Continue``) and waits for the rest of the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /v1/broadcasts HTTP/1.1\r\nHost: localhost\r\n"
        b"Authorization: Bearer " + API_TOKEN.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100000\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    await writer.drain()
    assert (await reader.readline()).startswith(b"HTTP/1.1 100")
    writer.write(b'{"message": "never fin')
    await writer.drain()
    try:
        yield
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_sigterm_tells_every_stream_and_exits_within_the_grace(
    tmp_path: Path, simulator: Simulator
) -> None:
    environ = service_environ(
        simulator,
        local_storage(tmp_path / "data"),
        TGB_SERVER_SHUTDOWN_GRACE=str(GRACE),
        TGB_SERVER_SSE_HEARTBEAT="3600",  # nothing but the drain ends an idle stream
    )
    http_url = f"http://127.0.0.1:{environ['TGB_SERVER_PORT']}"
    args = [str(TGBROADCAST), "run"]
    async with (
        spawn(args, environ, tmp_path, "run") as process,
        AsyncExitStack() as streams,
        aiohttp.ClientSession() as session,
    ):
        await wait_healthy(process, http_url)
        broadcast_id = await scheduled_broadcast(http_url)
        channel = await streams.enter_async_context(
            grpc.aio.insecure_channel(f"127.0.0.1:{environ['TGB_SERVER_GRPC_PORT']}")
        )
        sse = [await open_sse(streams, session, http_url, broadcast_id) for _ in range(STREAMS)]
        watches = [await open_grpc_watch(channel, broadcast_id) for _ in range(STREAMS)]
        assert all([await grpc_accepted(call) for call in watches])
        await streams.enter_async_context(held_request(int(environ["TGB_SERVER_PORT"])))

        process.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(GRACE):  # the watchdog ends the process by then anyway
            told = await asyncio.gather(*(sse_rest(response) for response in sse))
            assert all(b"event: shutdown\n" in text for text in told), told
            ends = await asyncio.gather(*(grpc_end(call) for call in watches))
            assert set(ends) == {(grpc.StatusCode.UNAVAILABLE, "server shutting down")}
            assert await readiness_after_drain_began(http_url) in (503, None)
            code = await process.proc.wait()
    log = process.log()
    assert code == 0, log
    assert "shutdown overran" not in log


WATCHDOG_CHILD = """
import logging, threading
from tgbroadcast.core.logs import configure_logging
from tgbroadcast.launcher.shutdown import Watchdog
configure_logging(level="INFO", secrets=())
Watchdog(0.2).start()
threading.Event().wait()  # a drain stuck for good
"""


async def test_the_watchdog_ends_a_drain_stuck_for_good(tmp_path: Path) -> None:
    args = [sys.executable, "-c", WATCHDOG_CHILD]
    async with spawn(args, {}, tmp_path, "stuck") as process:
        async with asyncio.timeout(GRACE):
            code = await process.proc.wait()
    assert code == EXIT_OVERRAN
    assert "shutdown overran server.shutdown_grace; exiting now" in process.log()
