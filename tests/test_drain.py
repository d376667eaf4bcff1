"""A drain that never hangs: SIGTERM to a real `tgbroadcast run` with watch streams open.

Every SSE stream gets ``event: shutdown`` and ends, every gRPC ``WatchBroadcast`` ends
``UNAVAILABLE`` ("server shutting down"), readiness fails (or the port is closed already),
and the process exits 0 — the orderly path finished before the watchdog that ends it at
``server.shutdown_grace`` — although a client holds a request open by never sending its body.
Every stream is told within the plan's time for streams and requests, counted from the signal.
A start-up that fails after gRPC started (the HTTP port taken) leaves nothing listening.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import NoReturn, TypeVar

import aiohttp
import grpc
import pytest

from tests.fixtures.environ import API_TOKEN, local_storage, service_environ
from tests.fixtures.processes import TGBROADCAST, spawn, wait_healthy
from tests.fixtures.services import free_port
from tests.fixtures.stack import Backend, on_sqlite, start_stack
from tests.fixtures.streams import (
    WatchCall,
    grpc_accepted,
    open_grpc_watch,
    open_sse,
    scheduled_broadcast,
)
from tgbroadcast.core.domain.errors import ConfigError
from tgbroadcast.launcher import api as launcher_api
from tgbroadcast.launcher.shutdown import ShutdownPlan
from tgbroadcast.simulator import Simulator

STREAMS = 20
GRACE = 20.0
EXIT_OVERRAN = 1
PLAN = ShutdownPlan(GRACE)
TOLD_WITHIN = PLAN.streams + PLAN.requests
"""Every stream is told by then, counted from SIGTERM: the drain tells them first and waits
:attr:`ShutdownPlan.streams` for them; generous, the requests' share on top."""

T = TypeVar("T")


async def ended_at(awaitable: Awaitable[T]) -> tuple[T, float]:
    """What ``awaitable`` gives, and the event loop's time when it did."""
    result = await awaitable
    return result, asyncio.get_running_loop().time()


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

        signalled = asyncio.get_running_loop().time()
        process.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(GRACE):  # the watchdog ends the process by then anyway
            sse_ends, grpc_ends = await asyncio.gather(
                asyncio.gather(*(ended_at(sse_rest(response)) for response in sse)),
                asyncio.gather(*(ended_at(grpc_end(call)) for call in watches)),
            )
            told = [text for text, _ in sse_ends]
            assert all(b"event: shutdown\n" in text for text in told), told
            ends = {end for end, _ in grpc_ends}
            assert ends == {(grpc.StatusCode.UNAVAILABLE, "server shutting down")}
            latest = max(at for _, at in [*sse_ends, *grpc_ends]) - signalled
            assert latest <= TOLD_WITHIN, f"last stream told {latest:.2f} s after SIGTERM"
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


@on_sqlite
@pytest.mark.parametrize("failing", ["create_app", "http_port_taken"])
async def test_a_failed_start_after_grpc_started_stops_grpc(
    backend: Backend, simulator: Simulator, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """Building the HTTP app fails, or its port is taken: starting fails, and the gRPC
    listener, already started, is stopped with it rather than left serving alone."""
    grpc_port = free_port()
    overrides = {"TGB_SERVER_HOST": "127.0.0.1", "TGB_SERVER_GRPC_PORT": str(grpc_port)}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        if failing == "create_app":

            def broken(*args: object, **kwargs: object) -> NoReturn:
                raise RuntimeError("create_app failed")

            monkeypatch.setattr(launcher_api, "create_app", broken)
            expected: tuple[type[Exception], str] = (RuntimeError, "create_app failed")
        else:
            overrides["TGB_SERVER_PORT"] = str(taken.getsockname()[1])
            expected = (ConfigError, "server.port: cannot listen on .*address already in use")
        with pytest.raises(expected[0], match=expected[1]):
            async with start_stack(backend, simulator, overrides):
                pytest.fail("started although the HTTP listener could not")
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", grpc_port)


@on_sqlite
async def test_a_grpc_port_another_server_serves_fails_the_start(
    backend: Backend, simulator: Simulator, tmp_path: Path
) -> None:
    """gRPC binds with SO_REUSEPORT by default: a second server would share the port, each
    answering half the calls with its own tokens and data. The port must be refused."""
    async with start_stack(backend, simulator, {"TGB_SERVER_HOST": "127.0.0.1"}) as first:
        assert first.running.api is not None
        taken = {
            "TGB_SERVER_HOST": "127.0.0.1",
            "TGB_SERVER_GRPC_PORT": str(first.running.api.grpc_port),
            "TGB_DATA_DIR": str(tmp_path / "second"),
        }
        with pytest.raises(ConfigError, match=r"server\.grpc_port: cannot listen on"):
            async with start_stack(backend, simulator, taken):
                pytest.fail("started on the gRPC port of a running server")
