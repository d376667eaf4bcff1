"""``server.allowed_networks`` and ``server.trusted_proxies`` over real sockets: a client from
a second loopback address (127.0.0.2) is let in or kept out, on HTTP and gRPC alike; the
probes (``/livez``, ``/readyz``, gRPC health) answer anyone."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from tests.fixtures.stack import Backend, Stack, on_sqlite, start_stack
from tgbroadcast.simulator import Simulator
from tgbroadcast.v1 import broadcast_pb2 as pb

pytestmark = on_sqlite

SECOND_LOOPBACK = "127.0.0.2"


@asynccontextmanager
async def session_from(address: str) -> AsyncIterator[aiohttp.ClientSession]:
    """A client whose connections come from ``address`` (any 127/8 address is local)."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


async def health_check(stack: Stack) -> health_pb2.HealthCheckResponse:
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        answer: health_pb2.HealthCheckResponse = await check(health_pb2.HealthCheckRequest())
        return answer


async def list_services(stack: Stack) -> set[str]:
    """The services server reflection names (it needs no token)."""
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        info = channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        answers: list[reflection_pb2.ServerReflectionResponse] = [
            answer async for answer in info(iter([request]))
        ]
        return {service.name for service in answers[0].list_services_response.service}


async def get(
    stack: Stack,
    path: str,
    *,
    source: str = "127.0.0.1",
    headers: Mapping[str, str] | None = None,
) -> tuple[int, str, dict[str, object]]:
    async with (
        session_from(source) as session,
        session.get(stack.http_url + path, headers={**stack.auth, **(headers or {})}) as answer,
    ):
        body = await answer.json(content_type=None)
        return answer.status, answer.content_type, body


async def test_only_clients_from_the_allowed_networks_are_served_over_http(
    backend: Backend, simulator: Simulator
) -> None:
    overrides = {"TGB_SERVER_ALLOWED_NETWORKS": f"{SECOND_LOOPBACK}/32, 2001:db8::/32"}
    async with start_stack(backend, simulator, overrides) as stack:
        for path in ("/v1/broadcasts", "/metrics", "/openapi.json", "/no/such/route"):
            status, content_type, body = await get(stack, path)
            assert (status, content_type) == (403, "application/problem+json"), path
            assert body["detail"] == ("client address 127.0.0.1 is not in server.allowed_networks")
        status, _, body = await get(stack, "/v1/broadcasts", source=SECOND_LOOPBACK)
        assert status == 200
        assert body["broadcasts"] == []


async def test_probes_answer_clients_outside_the_allowed_networks(
    backend: Backend, simulator: Simulator
) -> None:
    overrides = {"TGB_SERVER_ALLOWED_NETWORKS": f"{SECOND_LOOPBACK}/32"}
    async with start_stack(backend, simulator, overrides) as stack:
        for path in ("/livez", "/readyz"):
            status, _, _ = await get(stack, path, headers={"Authorization": ""})
            assert status == 200, path
        answer = await health_check(stack)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_grpc_refuses_clients_outside_the_allowed_networks(
    backend: Backend, simulator: Simulator
) -> None:
    overrides = {"TGB_SERVER_ALLOWED_NETWORKS": f"{SECOND_LOOPBACK}/32"}
    async with start_stack(backend, simulator, overrides) as stack, stack.stub() as stub:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ListBroadcasts(pb.ListBroadcastsRequest(), metadata=stack.metadata)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert refused.value.details() == (
            "client address 127.0.0.1 is not in server.allowed_networks"
        )
        with pytest.raises(grpc.aio.AioRpcError) as hidden:
            await list_services(stack)
        assert hidden.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_grpc_serves_clients_inside_the_allowed_networks(
    backend: Backend, simulator: Simulator
) -> None:
    overrides = {"TGB_SERVER_ALLOWED_NETWORKS": "::1/128,127.0.0.0/8"}
    async with start_stack(backend, simulator, overrides) as stack, stack.stub() as stub:
        answer = await stub.ListBroadcasts(pb.ListBroadcastsRequest(), metadata=stack.metadata)
        assert list(answer.broadcasts) == []
        assert "tgbroadcast.v1.BroadcastService" in await list_services(stack)


PROXIED = {
    "TGB_SERVER_ALLOWED_NETWORKS": "198.51.100.0/24",
    "TGB_SERVER_TRUSTED_PROXIES": "127.0.0.1/32",
}


async def test_forwarded_for_is_believed_from_a_trusted_proxy_only(
    backend: Backend, simulator: Simulator
) -> None:
    async with start_stack(backend, simulator, PROXIED) as stack:
        inside = {"X-Forwarded-For": "203.0.113.250, 198.51.100.7"}
        status, _, _ = await get(stack, "/v1/broadcasts", headers=inside)
        assert status == 200
        outside = {"X-Forwarded-For": "198.51.100.7, 203.0.113.9"}
        status, _, body = await get(stack, "/v1/broadcasts", headers=outside)
        assert status == 403
        assert "203.0.113.9" in str(body["detail"])
        # From an untrusted peer the header is the client's own claim: ignored.
        status, _, body = await get(
            stack,
            "/v1/broadcasts",
            source=SECOND_LOOPBACK,
            headers={"X-Forwarded-For": "198.51.100.7"},
        )
        assert status == 403
        assert "127.0.0.2" in str(body["detail"])


async def test_grpc_believes_x_forwarded_for_metadata_from_a_trusted_proxy(
    backend: Backend, simulator: Simulator
) -> None:
    async with start_stack(backend, simulator, PROXIED) as stack, stack.stub() as stub:
        inside = (*stack.metadata, ("x-forwarded-for", "198.51.100.7"))
        answer = await stub.ListBroadcasts(pb.ListBroadcastsRequest(), metadata=inside)
        assert list(answer.broadcasts) == []
        outside = (*stack.metadata, ("x-forwarded-for", "203.0.113.9"))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ListBroadcasts(pb.ListBroadcastsRequest(), metadata=outside)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
