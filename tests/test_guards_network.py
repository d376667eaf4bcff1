"""``server.allowed_networks`` and ``server.trusted_proxies`` over real sockets: a client from
a second loopback address (127.0.0.2) or from ``[::1]`` is let in or kept out, on HTTP and gRPC
alike; only the HTTP probes (``/livez``, ``/readyz``) answer anyone — gRPC health, reflection
and methods the server does not have follow the allow-list."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from tests.fixtures.loopback import (
    SECOND_LOOPBACK,
    dual_stack,
    ipv6_stub,
    ipv6_target,
    needs_ipv6,
)
from tests.fixtures.stack import Backend, Stack, on_sqlite, start_stack
from tgbroadcast.simulator import Simulator
from tgbroadcast.v1 import broadcast_pb2 as pb

pytestmark = on_sqlite


@asynccontextmanager
async def session_from(address: str) -> AsyncIterator[aiohttp.ClientSession]:
    """A client whose connections come from ``address`` (any 127/8 address is local)."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


async def health_check(target: str) -> health_pb2.HealthCheckResponse:
    """gRPC health, without a token."""
    async with grpc.aio.insecure_channel(target) as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        answer: health_pb2.HealthCheckResponse = await check(health_pb2.HealthCheckRequest())
        return answer


async def list_services(target: str) -> set[str]:
    """The services server reflection names (it needs no token)."""
    async with grpc.aio.insecure_channel(target) as channel:
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


async def test_http_probes_answer_clients_outside_the_allowed_networks(
    backend: Backend, simulator: Simulator
) -> None:
    overrides = {"TGB_SERVER_ALLOWED_NETWORKS": f"{SECOND_LOOPBACK}/32"}
    async with start_stack(backend, simulator, overrides) as stack:
        for path in ("/livez", "/readyz"):
            status, _, _ = await get(stack, path, headers={"Authorization": ""})
            assert status == 200, path
        # gRPC health is no exception: every RPC follows the allow-list.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await health_check(stack.grpc_target)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


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
            await list_services(stack.grpc_target)
        assert hidden.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_grpc_serves_clients_inside_the_allowed_networks(
    backend: Backend, simulator: Simulator
) -> None:
    overrides = {"TGB_SERVER_ALLOWED_NETWORKS": "::1/128,127.0.0.0/8"}
    async with start_stack(backend, simulator, overrides) as stack, stack.stub() as stub:
        answer = await stub.ListBroadcasts(pb.ListBroadcastsRequest(), metadata=stack.metadata)
        assert list(answer.broadcasts) == []
        assert "tgbroadcast.v1.BroadcastService" in await list_services(stack.grpc_target)


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


async def call_unknown(target: str) -> grpc.aio.AioRpcError:
    """A method the server does not have, unary and streaming: both refused alike. (A client
    still writing a request stream after the answer may see its own write fail instead.)"""
    errors = []
    async with grpc.aio.insecure_channel(target) as channel:
        unary: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/tgbroadcast.v1.BroadcastService/NoSuchMethod"
        )
        streams: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(
            "/no.such.Service/Watch"
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await unary(b"\x08\x01")
        errors.append(refused.value)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            _ = [answer async for answer in streams(b"a")]
        errors.append(refused.value)
    assert errors[0].code() == errors[1].code()
    return errors[0]


@needs_ipv6
async def test_an_ipv6_client_inside_the_allowed_networks_is_served_over_grpc(
    backend: Backend, simulator: Simulator
) -> None:
    with dual_stack() as dual:
        await _ipv6_client_served(backend, simulator, dual)


async def _ipv6_client_served(backend: Backend, simulator: Simulator, dual: dict[str, str]) -> None:
    overrides = {**dual, "TGB_SERVER_ALLOWED_NETWORKS": "::1/128"}
    async with (
        start_stack(backend, simulator, overrides) as stack,
        ipv6_stub(stack) as stub,
        stack.stub() as ipv4_stub,
    ):
        answer = await stub.ListBroadcasts(pb.ListBroadcastsRequest(), metadata=stack.metadata)
        assert list(answer.broadcasts) == []
        health = await health_check(ipv6_target(stack))
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        assert "tgbroadcast.v1.BroadcastService" in await list_services(ipv6_target(stack))
        assert (await call_unknown(ipv6_target(stack))).code() == grpc.StatusCode.UNIMPLEMENTED
        # The same server refuses 127.0.0.1 everything, health and unknown methods included.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await ipv4_stub.ListBroadcasts(pb.ListBroadcastsRequest(), metadata=stack.metadata)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await health_check(stack.grpc_target)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        unknown = await call_unknown(stack.grpc_target)
        assert unknown.code() == grpc.StatusCode.PERMISSION_DENIED
        assert unknown.details() == "client address 127.0.0.1 is not in server.allowed_networks"


@needs_ipv6
async def test_an_ipv6_client_outside_the_allowed_networks_is_refused_over_grpc(
    backend: Backend, simulator: Simulator
) -> None:
    with dual_stack() as dual:
        overrides = {**dual, "TGB_SERVER_ALLOWED_NETWORKS": "127.0.0.1/32"}
        async with start_stack(backend, simulator, overrides) as stack, ipv6_stub(stack) as stub:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ListBroadcasts(pb.ListBroadcastsRequest(), metadata=stack.metadata)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert refused.value.details() == "client address ::1 is not in server.allowed_networks"
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await health_check(ipv6_target(stack))
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert (
                await call_unknown(ipv6_target(stack))
            ).code() == grpc.StatusCode.PERMISSION_DENIED


@needs_ipv6
async def test_an_ipv6_server_host_serves_both_listeners(
    backend: Backend, simulator: Simulator
) -> None:
    """``server.host: ::1`` binds gRPC as ``[::1]:port`` and HTTP on ``::1``; the allow-list
    reads IPv6 clients of both."""
    overrides = {"TGB_SERVER_HOST": "::1", "TGB_SERVER_ALLOWED_NETWORKS": "::1/128"}
    async with start_stack(backend, simulator, overrides) as stack, ipv6_stub(stack) as stub:
        answer = await stub.ListBroadcasts(pb.ListBroadcastsRequest(), metadata=stack.metadata)
        assert list(answer.broadcasts) == []
        assert stack.running.api is not None
        url = f"http://[::1]:{stack.running.api.http_port}/v1/broadcasts"
        async with aiohttp.ClientSession() as session, session.get(url, headers=stack.auth) as got:
            assert got.status == 200, await got.text()
