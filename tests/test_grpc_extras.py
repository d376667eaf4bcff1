"""gRPC health checking and server reflection: open to anyone, while the API keeps its token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from tests.fixtures.stack import Stack
from tgbroadcast.v1 import broadcast_pb2 as pb
from tgbroadcast.v1 import broadcast_pb2_grpc as pb_grpc

# One backend is enough: these services do not touch the store.
pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

BROADCAST_SERVICE = "tgbroadcast.v1.BroadcastService"
HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICE = "grpc.reflection.v1alpha.ServerReflection"
SERVING = health_pb2.HealthCheckResponse.SERVING


@asynccontextmanager
async def channel(stack: Stack) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(stack.grpc_target) as opened:
        yield opened


async def health_check(stack: Stack, service: str) -> health_pb2.HealthCheckResponse:
    async with channel(stack) as opened:
        check = opened.unary_unary(
            f"/{HEALTH_SERVICE}/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        response: health_pb2.HealthCheckResponse = await check(
            health_pb2.HealthCheckRequest(service=service)
        )
        return response


async def reflect(
    stack: Stack, *requests: reflection_pb2.ServerReflectionRequest
) -> list[reflection_pb2.ServerReflectionResponse]:
    async with channel(stack) as opened:
        info = opened.stream_stream(
            f"/{REFLECTION_SERVICE}/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        return [response async for response in info(iter(requests))]


@pytest.mark.parametrize("service", ["", BROADCAST_SERVICE])
async def test_health_check_serves_without_a_token(stack: Stack, service: str) -> None:
    response = await health_check(stack, service)
    assert response.status == SERVING


async def test_health_check_of_an_unknown_service_is_not_found(stack: Stack) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await health_check(stack, "tgbroadcast.v1.NoSuchService")
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_health_watch_reports_serving_without_a_token(stack: Stack) -> None:
    async with channel(stack) as opened:
        watch = opened.unary_stream(
            f"/{HEALTH_SERVICE}/Watch",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        call = watch(health_pb2.HealthCheckRequest(service=BROADCAST_SERVICE))
        first = await call.read()
        assert isinstance(first, health_pb2.HealthCheckResponse)
        assert first.status == SERVING
        call.cancel()


async def test_reflection_lists_and_describes_the_api_without_a_token(stack: Stack) -> None:
    listed, described = await reflect(
        stack,
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=BROADCAST_SERVICE),
    )
    names = {service.name for service in listed.list_services_response.service}
    assert names == {BROADCAST_SERVICE, HEALTH_SERVICE, REFLECTION_SERVICE}

    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in described.file_descriptor_response.file_descriptor_proto
    ]
    by_name = {file.name: file for file in files}
    api = by_name["tgbroadcast/v1/broadcast.proto"]
    # Exactly what the generated stubs know: a client reflecting sees every RPC.
    assert [method.name for method in api.service[0].method] == [
        method.name for method in pb.DESCRIPTOR.services_by_name["BroadcastService"].methods
    ]
    assert {"SendMessage", "WatchBroadcast", "CancelBroadcast", "ImportUsers"} <= {
        method.name for method in api.service[0].method
    }
    # Its imports come along, so a client can build every message type.
    assert "google/protobuf/timestamp.proto" in by_name


@pytest.mark.parametrize(
    "metadata",
    [(), (("authorization", "Bearer not-the-api-token-at-all"),)],
    ids=["no-token", "wrong-token"],
)
async def test_broadcast_service_still_needs_the_token(
    stack: Stack, metadata: tuple[tuple[str, str], ...]
) -> None:
    async with channel(stack) as opened:
        stub = pb_grpc.BroadcastServiceStub(opened)
        with pytest.raises(grpc.aio.AioRpcError) as unary:
            await stub.GetBroadcast(pb.GetBroadcastRequest(broadcast_id=1), metadata=metadata)
        assert unary.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as sent:
            await stub.SendMessage(
                pb.SendMessageRequest(message="hi", user_ids=[1]), metadata=metadata
            )
        assert sent.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as streamed:
            async for _ in stub.WatchBroadcast(
                pb.WatchBroadcastRequest(broadcast_id=1), metadata=metadata
            ):
                pass  # pragma: no cover - the call is refused before any message
        assert streamed.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert not stack.simulator.calls


async def test_health_and_reflection_also_answer_with_a_token(stack: Stack) -> None:
    async with channel(stack) as opened:
        check = opened.unary_unary(
            f"/{HEALTH_SERVICE}/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        response: health_pb2.HealthCheckResponse = await check(
            health_pb2.HealthCheckRequest(), metadata=stack.metadata
        )
    assert response.status == SERVING
