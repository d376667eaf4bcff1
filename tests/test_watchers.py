"""``server.max_watchers``: open WatchBroadcast and SSE streams share one bound per server
process; one more is refused (429 / RESOURCE_EXHAUSTED) until one closes."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import grpc

from tests.fixtures.nats import wait_until
from tests.fixtures.stack import open_backend, start_stack
from tests.fixtures.streams import (
    grpc_accepted,
    open_grpc_watch,
    open_sse,
    scheduled_broadcast,
    sse_refusal,
)
from tgbroadcast.simulator import Simulator


async def test_max_watchers_bounds_sse_and_grpc_streams_together(
    simulator: Simulator, tmp_path: Path
) -> None:
    overrides = {"TGB_SERVER_MAX_WATCHERS": "2"}
    async with (
        open_backend("sqlite", tmp_path) as backend,
        start_stack(backend, simulator, overrides) as stack,
        AsyncExitStack() as streams,
        aiohttp.ClientSession() as session,
        grpc.aio.insecure_channel(stack.grpc_target) as channel,
    ):
        broadcast_id = await scheduled_broadcast(stack.http_url)
        first = await open_grpc_watch(channel, broadcast_id)
        assert await grpc_accepted(first)
        await open_sse(streams, session, stack.http_url, broadcast_id)

        status, content_type, body = await sse_refusal(stack.http_url, broadcast_id)
        assert (status, content_type) == (429, "application/problem+json")
        assert "server.max_watchers = 2" in body["detail"]
        refused = await open_grpc_watch(channel, broadcast_id)
        assert not await grpc_accepted(refused)
        assert await refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "server.max_watchers = 2" in await refused.details()

        first.cancel()  # one closes: its place is free once the server has seen it go
        accepted: list[object] = []

        async def one_more_accepted() -> bool:
            call = await open_grpc_watch(channel, broadcast_id)
            if not await grpc_accepted(call):
                assert await call.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                return False
            accepted.append(call)
            return True

        await wait_until(one_more_accepted)
        refused = await open_grpc_watch(channel, broadcast_id)
        assert await refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
