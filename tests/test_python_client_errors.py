"""The Python client's error mapping and request building, call by call.

Statuses are built as the server builds them; the calls the end-to-end tests do not reach
go to a small in-process servicer that records what the client sends and answers what a
test tells it to.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from tests.fixtures.stack import API_TOKEN
from tgbroadcast.v1 import broadcast_pb2 as pb
from tgbroadcast.v1 import broadcast_pb2_grpc as pb_grpc
from tgbroadcast_client import (
    AlreadyExists,
    BroadcastClient,
    BroadcastClientError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    error_from_rpc,
    message_request,
)


def rpc_error(code: int, message: str, *details: Any) -> grpc.aio.AioRpcError:
    packed = []
    for detail in details:
        wrapped = any_pb2.Any()
        wrapped.Pack(detail)
        packed.append(wrapped)
    status = rpc_status.to_status(status_pb2.Status(code=code, message=message, details=packed))
    return grpc.aio.AioRpcError(
        status.code,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(*status.trailing_metadata),
        details=status.details,
    )


@pytest.mark.parametrize(
    ("code", "error_type"),
    [
        (code_pb2.NOT_FOUND, NotFound),
        (code_pb2.FAILED_PRECONDITION, FailedPrecondition),
        (code_pb2.ALREADY_EXISTS, AlreadyExists),
        (code_pb2.UNAUTHENTICATED, Unauthenticated),
        (code_pb2.PERMISSION_DENIED, PermissionDenied),
        (code_pb2.RESOURCE_EXHAUSTED, ResourceExhausted),
        (code_pb2.UNAVAILABLE, Unavailable),
        (code_pb2.INTERNAL, BroadcastClientError),
        (code_pb2.DEADLINE_EXCEEDED, BroadcastClientError),
    ],
)
def test_each_status_maps_to_its_error(code: int, error_type: type[Exception]) -> None:
    error = error_from_rpc(rpc_error(code, "broadcast 7 is completed"))
    assert type(error) is error_type
    assert error.details == "broadcast 7 is completed"
    assert error.code.value[0] == code


def test_invalid_argument_carries_the_bad_request_violations() -> None:
    bad_request = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field="user_ids[0]", description="is 0"),
            error_details_pb2.BadRequest.FieldViolation(field="message", description="empty"),
        ]
    )
    error = error_from_rpc(rpc_error(code_pb2.INVALID_ARGUMENT, "two problems", bad_request))
    assert isinstance(error, InvalidArgument)
    assert error.violations == (
        FieldViolation("user_ids[0]", "is 0"),
        FieldViolation("message", "empty"),
    )
    # Without a BadRequest detail (or with other details) there are no violations.
    other = error_from_rpc(
        rpc_error(code_pb2.INVALID_ARGUMENT, "bad", error_details_pb2.RetryInfo())
    )
    assert isinstance(other, InvalidArgument)
    assert other.violations == ()


def test_resource_exhausted_carries_the_retry_delay() -> None:
    retry = error_details_pb2.RetryInfo()
    retry.retry_delay.FromMilliseconds(2500)
    error = error_from_rpc(rpc_error(code_pb2.RESOURCE_EXHAUSTED, "too many requests", retry))
    assert isinstance(error, ResourceExhausted)
    assert error.retry_after == 2.5
    unknown = error_from_rpc(rpc_error(code_pb2.RESOURCE_EXHAUSTED, "too many watchers"))
    assert isinstance(unknown, ResourceExhausted)
    assert unknown.retry_after is None


@dataclass
class Recorder(pb_grpc.BroadcastServiceServicer):
    requests: list[Any]
    abort: tuple[grpc.StatusCode, str] | None = None

    async def _answer(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any], response: Any
    ) -> Any:
        self.requests.append(request)
        metadata = dict(context.invocation_metadata() or ())
        assert metadata["authorization"] == f"Bearer {API_TOKEN}"
        if self.abort is not None:
            await context.abort(*self.abort)
        return response

    async def ListBroadcasts(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await self._answer(
            request, context, pb.ListBroadcastsResponse(next_page_token="next")
        )

    async def CancelBroadcast(self, request: Any, context: Any) -> Any:  # noqa: N802
        broadcast = pb.Broadcast(broadcast_id=request.broadcast_id)
        broadcast.status = pb.BROADCAST_STATUS_CANCELLED
        return await self._answer(request, context, pb.CancelBroadcastResponse(broadcast=broadcast))

    async def PauseBroadcast(self, request: Any, context: Any) -> Any:  # noqa: N802
        broadcast = pb.Broadcast(broadcast_id=request.broadcast_id)
        broadcast.status = pb.BROADCAST_STATUS_PAUSED
        return await self._answer(request, context, pb.PauseBroadcastResponse(broadcast=broadcast))

    async def ResumeBroadcast(self, request: Any, context: Any) -> Any:  # noqa: N802
        broadcast = pb.Broadcast(broadcast_id=request.broadcast_id)
        broadcast.status = pb.BROADCAST_STATUS_RUNNING
        return await self._answer(request, context, pb.ResumeBroadcastResponse(broadcast=broadcast))

    async def ListDeliveries(self, request: Any, context: Any) -> Any:  # noqa: N802
        result = pb.DeliveryResult(user_id=5)
        result.outcome = pb.DELIVERY_OUTCOME_PENDING
        return await self._answer(request, context, pb.ListDeliveriesResponse(results=[result]))

    async def PreviewMessage(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await self._answer(request, context, pb.PreviewMessageResponse(text="Hi Ann"))

    async def GetUser(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await self._answer(request, context, pb.GetUserResponse(user=pb.User(id=5)))

    async def DeleteUser(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await self._answer(request, context, pb.DeleteUserResponse())

    async def ImportUsers(self, request_iterator: Any, context: Any) -> Any:  # noqa: N802
        chunks = [chunk async for chunk in request_iterator]
        imported = sum(len(chunk.users) for chunk in chunks)
        return await self._answer(chunks, context, pb.ImportUsersResponse(imported=imported))


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[Recorder, str]]:
    servicer = Recorder(requests=[])  # type: ignore[abstract]  # serves the calls under test
    server = grpc.aio.server()
    pb_grpc.add_BroadcastServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def test_the_other_calls_send_what_they_are_given(recorder: tuple[Recorder, str]) -> None:
    servicer, target = recorder
    async with BroadcastClient(target, API_TOKEN) as client:
        page = await client.list_broadcasts(statuses=["running", pb.BROADCAST_STATUS_PAUSED])
        assert page.next_page_token == "next"
        assert (await client.cancel(7)).status == pb.BROADCAST_STATUS_CANCELLED
        assert (await client.pause(7)).status == pb.BROADCAST_STATUS_PAUSED
        assert (await client.resume(7)).status == pb.BROADCAST_STATUS_RUNNING
        deliveries = await client.list_deliveries(
            7, outcomes=["blocked", "pending"], page_size=10, page_token="t"
        )
        assert deliveries.results[0].outcome == pb.DELIVERY_OUTCOME_PENDING
        preview = await client.preview(
            message_request("Hi {first_name}", personalize=True), user_id=5
        )
        assert preview.text == "Hi Ann"
        assert (await client.get_user(5)).id == 5
        await client.delete_user(5)
        imported = await client.import_users([[pb.User(id=1), pb.User(id=2)], [pb.User(id=3)]])
        assert imported == 3
    (
        listed,
        cancelled,
        paused,
        resumed,
        listed_deliveries,
        previewed,
        got,
        deleted,
        chunks,
    ) = servicer.requests
    assert list(listed.statuses) == [pb.BROADCAST_STATUS_RUNNING, pb.BROADCAST_STATUS_PAUSED]
    assert cancelled.broadcast_id == paused.broadcast_id == resumed.broadcast_id == 7
    assert list(listed_deliveries.outcomes) == [
        pb.DELIVERY_OUTCOME_BLOCKED,
        pb.DELIVERY_OUTCOME_PENDING,
    ]
    assert (listed_deliveries.page_size, listed_deliveries.page_token) == (10, "t")
    assert previewed.user_id == 5
    assert previewed.message.personalize
    assert got.user_id == deleted.user_id == 5
    assert [len(chunk.users) for chunk in chunks] == [2, 1]


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (grpc.StatusCode.FAILED_PRECONDITION, FailedPrecondition),
        (grpc.StatusCode.NOT_FOUND, NotFound),
        (grpc.StatusCode.ALREADY_EXISTS, AlreadyExists),
    ],
)
async def test_the_other_calls_raise_mapped_errors(
    recorder: tuple[Recorder, str], status: grpc.StatusCode, error_type: type[Exception]
) -> None:
    servicer, target = recorder
    servicer.abort = (status, "broadcast 7 is completed")
    async with BroadcastClient(target, API_TOKEN) as client:
        with pytest.raises(error_type, match="broadcast 7 is completed"):
            await client.pause(7)
        with pytest.raises(error_type):
            await client.import_users([[pb.User(id=1)]])
