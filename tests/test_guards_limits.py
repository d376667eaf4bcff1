"""Limits over real sockets: ``server.requests_per_second`` per token (429 + ``Retry-After`` /
RESOURCE_EXHAUSTED + ``google.rpc.RetryInfo``), the failed-authentication throttle per client
address, and ``server.max_pending_recipients`` (refused, nothing written).

No test depends on timing: the rate is so small (one request per ten seconds, a burst of one)
that the second request back to back is over it on any machine.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.fixtures.loopback import dual_stack, ipv6_stub, needs_ipv6
from tests.fixtures.stack import SECOND_API_TOKEN, Backend, Stack, on_sqlite, start_stack
from tgbroadcast.core.domain.model import UserProfile
from tgbroadcast.server.guards import AUTH_FAILURES
from tgbroadcast.simulator import Simulator
from tgbroadcast.v1 import broadcast_pb2 as pb

pytestmark = on_sqlite

SLOW = {"TGB_SERVER_REQUESTS_PER_SECOND": "0.1"}
WRONG = {"Authorization": "Bearer not-the-token"}


async def request(
    stack: Stack,
    path: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: dict[str, Any] | None = None,
    source: str = "127.0.0.1",
) -> tuple[int, Mapping[str, str], dict[str, Any]]:
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.request(
            "GET" if body is None else "POST",
            stack.http_url + path,
            headers=stack.auth if headers is None else headers,
            json=body,
        ) as answer,
    ):
        return answer.status, answer.headers, await answer.json(content_type=None)


def retry_delay(error: grpc.aio.AioRpcError) -> float:
    """The seconds of the ``google.rpc.RetryInfo`` detail."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.ToTimedelta().total_seconds()
    raise AssertionError("no RetryInfo detail")


async def exhausted(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    return refused.value


async def test_a_token_over_its_rate_gets_429_with_retry_after(
    backend: Backend, simulator: Simulator
) -> None:
    async with start_stack(backend, simulator, SLOW) as stack:
        assert (await request(stack, "/v1/broadcasts"))[0] == 200
        status, headers, body = await request(stack, "/v1/broadcasts")
        assert status == 429
        assert headers["Content-Type"].startswith("application/problem+json")
        assert 1 <= int(headers["Retry-After"]) <= 10
        assert "server.requests_per_second (0.1)" in body["detail"]
        # Another token has its own bucket; the public routes have none.
        other = {"Authorization": f"Bearer {SECOND_API_TOKEN}"}
        assert (await request(stack, "/v1/broadcasts", headers=other))[0] == 200
        assert (await request(stack, "/openapi.json", headers={}))[0] == 200


async def test_the_rate_counts_over_grpc_and_http_together(
    backend: Backend, simulator: Simulator
) -> None:
    async with start_stack(backend, simulator, SLOW) as stack, stack.stub() as stub:
        assert (await request(stack, "/v1/broadcasts"))[0] == 200
        error = await exhausted(
            stub.ListBroadcasts(pb.ListBroadcastsRequest(), metadata=stack.metadata)
        )
        assert 0 < retry_delay(error) <= 10
        assert "server.requests_per_second" in (error.details() or "")
        other = (("authorization", f"Bearer {SECOND_API_TOKEN}"),)
        await stub.ListBroadcasts(pb.ListBroadcastsRequest(), metadata=other)
        await exhausted(stub.ListBroadcasts(pb.ListBroadcastsRequest(), metadata=other))


async def test_failed_authentication_is_throttled_per_client_address(
    backend: Backend, simulator: Simulator
) -> None:
    async with start_stack(backend, simulator) as stack, stack.stub() as stub:
        for _ in range(AUTH_FAILURES):
            assert (await request(stack, "/v1/broadcasts", headers=WRONG))[0] == 401
        status, headers, body = await request(stack, "/v1/broadcasts", headers=WRONG)
        assert status == 429
        assert int(headers["Retry-After"]) == 60
        assert "failed authentications" in body["detail"]
        # Blocked is blocked: the right token from there too, and over gRPC.
        assert (await request(stack, "/v1/broadcasts"))[0] == 429
        error = await exhausted(
            stub.ListBroadcasts(pb.ListBroadcastsRequest(), metadata=stack.metadata)
        )
        assert 0 < retry_delay(error) <= 60
        # Another address is not.
        assert (await request(stack, "/v1/broadcasts", source="127.0.0.2"))[0] == 200


async def test_failed_authentication_over_grpc_is_throttled(
    backend: Backend, simulator: Simulator
) -> None:
    async with start_stack(backend, simulator) as stack, stack.stub() as stub:
        wrong = (("authorization", "Bearer not-the-token"),)
        for _ in range(AUTH_FAILURES):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ListBroadcasts(pb.ListBroadcastsRequest(), metadata=wrong)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        await exhausted(stub.ListBroadcasts(pb.ListBroadcastsRequest(), metadata=wrong))
        await exhausted(stub.ListBroadcasts(pb.ListBroadcastsRequest(), metadata=stack.metadata))


@needs_ipv6
async def test_failed_authentication_over_ipv6_grpc_is_throttled_whatever_the_port(
    backend: Backend, simulator: Simulator
) -> None:
    """Each call on a new channel, so from a new source port: the address counts, not the
    connection."""
    with dual_stack() as dual:
        await _throttled_over_ipv6(backend, simulator, dual)


async def _throttled_over_ipv6(
    backend: Backend, simulator: Simulator, dual: dict[str, str]
) -> None:
    async with start_stack(backend, simulator, dual) as stack:
        wrong = (("authorization", "Bearer not-the-token"),)
        for _ in range(AUTH_FAILURES):
            async with ipv6_stub(stack) as stub:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.ListBroadcasts(pb.ListBroadcastsRequest(), metadata=wrong)
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        async with ipv6_stub(stack) as stub:
            error = await exhausted(stub.ListBroadcasts(pb.ListBroadcastsRequest(), metadata=wrong))
            assert 0 < retry_delay(error) <= 60
            await exhausted(
                stub.ListBroadcasts(pb.ListBroadcastsRequest(), metadata=stack.metadata)
            )
        # 127.0.0.1 is another client.
        async with stack.stub() as stub:
            await stub.ListBroadcasts(pb.ListBroadcastsRequest(), metadata=stack.metadata)


PENDING_LIMIT = {"TGB_SERVER_MAX_PENDING_RECIPIENTS": "3"}
LATER = "2999-01-01T00:00:00Z"
"""A ``send_at`` that keeps a broadcast scheduled: its recipients stay not final."""


async def broadcasts_listed(stack: Stack) -> list[dict[str, Any]]:
    status, _, body = await request(stack, "/v1/broadcasts")
    assert status == 200
    listed: list[dict[str, Any]] = body["broadcasts"]
    return listed


async def test_a_send_over_max_pending_recipients_is_refused_and_writes_nothing(
    backend: Backend, simulator: Simulator
) -> None:
    async with start_stack(backend, simulator, PENDING_LIMIT) as stack, stack.stub() as stub:
        body = {"message": "hi", "user_ids": [1, 2, 3, 4]}
        status, headers, problem = await request(stack, "/v1/broadcasts", body=body)
        assert status == 429
        assert "Retry-After" not in headers
        assert "server.max_pending_recipients (3)" in problem["detail"]
        error = await exhausted(
            stub.SendMessage(
                pb.SendMessageRequest(message="hi", user_ids=[1, 2, 3, 4]),
                metadata=stack.metadata,
            )
        )
        assert "server.max_pending_recipients" in (error.details() or "")
        assert await broadcasts_listed(stack) == []
        assert stack.simulator.calls == ()


async def test_pending_recipients_of_every_unfinished_broadcast_count(
    backend: Backend, simulator: Simulator
) -> None:
    async with start_stack(backend, simulator, PENDING_LIMIT) as stack:
        scheduled = {"message": "later", "user_ids": [1, 2], "send_at": LATER}
        status, _, first = await request(stack, "/v1/broadcasts", body=scheduled)
        assert status == 202
        one_more = {"message": "hi", "user_ids": [3], "send_at": LATER}
        assert (await request(stack, "/v1/broadcasts", body=one_more))[0] == 202
        status, _, problem = await request(stack, "/v1/broadcasts", body=one_more)
        assert status == 429
        assert "from 3 above" in problem["detail"]
        assert len(await broadcasts_listed(stack)) == 2
        # An audience is counted as it stands: two users tagged beta are two more recipients.
        store = stack.running.backends.store
        await store.upsert_users([UserProfile(id=i, tags=("beta",)) for i in (10, 11)])
        beta = {"message": "beta", "filter": {"tags": ["beta"]}, "send_at": LATER}
        assert (await request(stack, "/v1/broadcasts", body=beta))[0] == 429
        assert len(await broadcasts_listed(stack)) == 2
        # A final broadcast's recipients no longer count.
        cancel = f"/v1/broadcasts/{first['broadcast_id']}/cancel"
        assert (await request(stack, cancel, body={}))[0] == 200
        assert (await request(stack, "/v1/broadcasts", body=beta))[0] == 202
