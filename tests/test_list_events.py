"""The live list (``GET /v1/broadcasts/events`` and ``WatchBroadcasts``), a broadcast's stream
from now with its status moves, and ``GetToken``: one stack for the module (SQLite, embedded
nats-server, a simulator that holds chosen sends), both transports side by side.

Every wait is on an event of a stream; a held send makes "in flight" a state, not a timing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import pytest_asyncio
from google.protobuf import json_format

from tests.fixtures.grpc_details import bad_request
from tests.fixtures.held_calls import HoldingSimulator
from tests.fixtures.rest import get, post
from tests.fixtures.stack import Stack, open_backend, start_stack
from tgbroadcast.v1 import broadcast_pb2 as pb
from tgbroadcast.v1 import broadcast_pb2_grpc as pb_grpc

pytestmark = pytest.mark.asyncio(loop_scope="module")

LIST = "/v1/broadcasts/events"


@pytest_asyncio.fixture(name="live", scope="module", loop_scope="module")
async def live_fixture(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Stack, HoldingSimulator]]:
    folder: Path = tmp_path_factory.mktemp("list_events")
    async with (
        HoldingSimulator() as simulator,
        open_backend("sqlite", folder) as backend,
        start_stack(backend, simulator) as stack,
    ):
        yield stack, simulator


class Sse:
    """An open event stream, read event by event (comments skipped)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next(self) -> tuple[str, dict[str, Any], str | None]:
        """The next event: its type, its data, its id."""
        fields: dict[str, str] = {}
        while True:
            line = (await self.response.content.readline()).decode().rstrip("\r\n")
            if line == "":
                if "data" in fields:
                    return (
                        fields.get("event", "message"),
                        json.loads(fields["data"]),
                        fields.get("id"),
                    )
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value


async def open_sse(
    exits: AsyncExitStack, stack: Stack, path: str, *, headers: Mapping[str, str] | None = None
) -> Sse:
    session = await exits.enter_async_context(aiohttp.ClientSession(headers=stack.auth))
    response = await exits.enter_async_context(session.get(stack.http_url + path, headers=headers))
    assert response.status == 200, await response.text()
    return Sse(response)


async def open_list(exits: AsyncExitStack, stack: Stack, path: str = LIST) -> Sse:
    """The list's stream, once it said ``ready``."""
    sse = await open_sse(exits, stack, path)
    assert await sse.next() == ("ready", {}, None)
    return sse


async def open_grpc_list(
    exits: AsyncExitStack, stack: Stack, request: pb.WatchBroadcastsRequest
) -> Any:
    channel = await exits.enter_async_context(grpc.aio.insecure_channel(stack.grpc_target))
    call = pb_grpc.BroadcastServiceStub(channel).WatchBroadcasts(request, metadata=stack.metadata)
    exits.callback(call.cancel)
    first: Any = await call.read()
    assert first.WhichOneof("update") == "ready"
    return call


async def scheduled(stack: Stack) -> int:
    send_at = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    status, answer = await post(
        stack, "/v1/broadcasts", {"message": "later", "user_ids": [1], "send_at": send_at}
    )
    assert status == 202, answer
    return int(answer["broadcast_id"])


async def send(stack: Stack, user_ids: list[int]) -> int:
    status, answer = await post(stack, "/v1/broadcasts", {"message": "hi", "user_ids": user_ids})
    assert status == 202, answer
    return int(answer["broadcast_id"])


async def statuses_until(sse: Sse, broadcast_id: int, last: str) -> list[dict[str, Any]]:
    """The list's events of ``broadcast_id`` until one with status ``last``."""
    seen: list[dict[str, Any]] = []
    while not seen or seen[-1]["status"] != last:
        event, data, _ = await sse.next()
        assert event == "broadcast", (event, data)
        if data["broadcast_id"] == broadcast_id:
            seen.append(data)
    return seen


async def grpc_until(call: Any, broadcast_id: int, last: int) -> list[pb.Broadcast]:
    seen: list[pb.Broadcast] = []
    while not seen or seen[-1].status != last:
        message = await call.read()
        assert message.WhichOneof("update") == "broadcast"
        if message.broadcast.broadcast_id == broadcast_id:
            seen.append(message.broadcast)
    return seen


async def test_the_list_streams_each_broadcast_as_it_is_created_and_moves(
    live: tuple[Stack, HoldingSimulator],
) -> None:
    stack, _ = live
    async with AsyncExitStack() as exits:
        sse = await open_list(exits, stack)
        call = await open_grpc_list(exits, stack, pb.WatchBroadcastsRequest())
        later = await scheduled(stack)
        # Its creation is streamed (before the cancel: each event is the broadcast as SQL has
        # it when read, so a move made first would be what a creation's event shows).
        assert (await statuses_until(sse, later, "scheduled"))[-1]["status"] == "scheduled"
        await grpc_until(call, later, pb.BROADCAST_STATUS_SCHEDULED)
        status, _ = await post(stack, f"/v1/broadcasts/{later}/cancel", None)
        assert status == 200
        rest_seen = await statuses_until(sse, later, "cancelled")
        assert rest_seen[-1]["actions"][0]["action"] == "cancel"  # as lists show it
        grpc_seen = await grpc_until(call, later, pb.BROADCAST_STATUS_CANCELLED)
        assert grpc_seen[-1].status == pb.BROADCAST_STATUS_CANCELLED
        sent = await send(stack, [31, 32, 33])
        last = (await statuses_until(sse, sent, "completed"))[-1]
        assert (last["sent"], last["pending"]) == (3, 0)
        assert (await grpc_until(call, sent, pb.BROADCAST_STATUS_COMPLETED))[-1].sent == 3


async def test_filters_and_bad_input_of_the_list(live: tuple[Stack, HoldingSimulator]) -> None:
    """Only broadcasts that moved to a filtered status come: the cancelled one changed first,
    so the completed one is the first event only if the filter held the other back."""
    stack, _ = live
    async with AsyncExitStack() as exits:
        sse = await open_list(exits, stack, LIST + "?status=completed&bot=default")
        request = pb.WatchBroadcastsRequest(bot="default", statuses=[pb.BROADCAST_STATUS_COMPLETED])
        call = await open_grpc_list(exits, stack, request)
        later = await scheduled(stack)
        assert (await post(stack, f"/v1/broadcasts/{later}/cancel", None))[0] == 200
        sent = await send(stack, [41])
        event, data, _ = await sse.next()
        assert (event, data["broadcast_id"], data["status"]) == ("broadcast", sent, "completed")
        message = await call.read()
        assert (message.broadcast.broadcast_id, message.broadcast.status) == (
            sent,
            pb.BROADCAST_STATUS_COMPLETED,
        )
    for query, field in (("status=bogus", "status[0]"), ("bot=No!", "bot"), ("x=1", "x")):
        status, problem = await get(stack, f"{LIST}?{query}")
        assert status == 400, problem
        assert [e["field"] for e in problem["errors"]] == [field], problem
    async with stack.stub() as stub:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.WatchBroadcasts(
                pb.WatchBroadcastsRequest(statuses=[pb.BroadcastStatus.ValueType(77)]),
                metadata=stack.metadata,
            ).read()
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(bad_request(raised.value)) == ["statuses[0]"]


async def test_a_stream_from_now_carries_each_move_and_the_status_of_later_outcomes(
    live: tuple[Stack, HoldingSimulator],
) -> None:
    """The second send is held in the simulator: the stream from now starts after the first
    outcome (not replayed), the pause comes as a status event, and the held outcome recorded
    after it says ``paused`` — over SSE and over gRPC."""
    stack, simulator = live
    held = simulator.hold("sendMessage", after=1)
    try:
        broadcast_id = await send(stack, [51, 52])
        async with AsyncExitStack() as exits:
            channel = await exits.enter_async_context(grpc.aio.insecure_channel(stack.grpc_target))
            watch: Any = pb_grpc.BroadcastServiceStub(channel).WatchBroadcast(
                pb.WatchBroadcastRequest(broadcast_id=broadcast_id), metadata=stack.metadata
            )
            exits.callback(watch.cancel)
            first = await watch.read()  # the outcome that went through
            await held.holding()  # and the other one is in flight
            sse = await open_sse(exits, stack, f"/v1/broadcasts/{broadcast_id}/events?from=now")
            event, data, cursor = await sse.next()
            assert (event, data["progress"]["status"]) == ("status", "running")
            assert (data["progress"]["sent"], data["progress"]["pending"]) == (1, 1)
            assert str(cursor).startswith("s")
            assert (await post(stack, f"/v1/broadcasts/{broadcast_id}/pause", None))[0] == 200
            event, data, _ = await sse.next()
            assert (event, data["progress"]["status"]) == ("status", "paused")
            held.release()
            event, data, _ = await sse.next()
            assert event == "result"
            assert (data["user_id"], data["progress"]["status"]) == (
                {51, 52}.difference({first.result.user_id}).pop(),
                "paused",
            )
            event, data, _ = await sse.next()
            assert (event, data["progress"]["status"], data["progress"]["sent"]) == (
                "end",
                "completed",  # the held send was the last one
                2,
            )
            second = await watch.read()  # gRPC has no status message: the outcome says it
            assert second.progress.status == pb.BROADCAST_STATUS_PAUSED
            closing = await watch.read()
            assert not closing.HasField("result")
            assert closing.progress.status == pb.BROADCAST_STATUS_COMPLETED
    finally:
        held.release()
    status, problem = await get(stack, f"/v1/broadcasts/{broadcast_id}/events?from=start")
    assert status == 400
    assert [e["field"] for e in problem["errors"]] == ["from"]


async def test_get_token_answers_as_get_v1_token(live: tuple[Stack, HoldingSimulator]) -> None:
    stack, _ = live
    status, answer = await get(stack, "/v1/token")
    assert status == 200, answer
    async with stack.stub() as stub:
        told = await stub.GetToken(pb.GetTokenRequest(), metadata=stack.metadata)
    assert json_format.MessageToDict(told, preserving_proto_field_name=True) == {
        key: value for key, value in answer.items() if value not in ("", [])
    }
    assert answer["bot_limits"][0]["name"] == "default"
