"""A paid broadcast's Stars budget (#15.7): ``max_stars`` stops its paid sending once the
estimated spend reaches it, and the rest goes at the free rate — nobody lost or sent twice;
GetBroadcast reports ``stars_spent_estimate`` and ``paid_stopped_at``. Refused without
``allow_paid_broadcast``."""

from __future__ import annotations

from collections import Counter

import grpc
import pytest

from tests.fixtures.grpc_details import bad_request
from tests.fixtures.stack import Backend, Stack, on_sqlite, start_stack
from tests.fixtures.watching import watch
from tests.test_recall import rest
from tgbroadcast.simulator import Simulator
from tgbroadcast.v1 import broadcast_pb2 as pb

PAID_RATE = 60
"""Half the messages above the free 30 per second: 0.05 Star each."""


@on_sqlite
async def test_the_paid_lane_stops_at_the_budget_and_the_rest_goes_free(
    backend: Backend, simulator: Simulator
) -> None:
    overrides = {"TGB_TELEGRAM_PAID_RATE_LIMIT": str(PAID_RATE)}
    async with start_stack(backend, simulator, overrides) as stack:
        users = list(range(8001, 8201))
        body = {
            "message": "flash sale",
            "user_ids": users,
            "allow_paid_broadcast": True,
            "max_stars": 5,  # 100 messages at 0.05 Star
        }
        code, accepted = await rest(stack, "POST", "/v1/broadcasts", body)
        assert code == 202, accepted
        broadcast_id = accepted["broadcast_id"]
        closing = (await watch(stack, broadcast_id))[-1]
        _, report = await rest(stack, "GET", f"/v1/broadcasts/{broadcast_id}")
        async with stack.stub() as stub:
            got = await stub.GetBroadcast(
                pb.GetBroadcastRequest(broadcast_id=broadcast_id), metadata=stack.metadata
            )
    assert closing.progress.status == pb.BROADCAST_STATUS_COMPLETED
    assert closing.progress.sent == len(users)
    sends = [c for c in simulator.calls if c.method == "sendMessage" and c.ok]
    assert Counter(int(c.params["chat_id"]) for c in sends) == dict.fromkeys(users, 1)
    paid = [c for c in sends if c.params.get("allow_paid_broadcast") is True]
    free = [c for c in sends if c.params.get("allow_paid_broadcast") is not True]
    assert len(paid) >= 100  # the budget's worth went paid
    assert free  # then the rest went free
    assert report["max_stars"] == 5
    assert report["stars_spent_estimate"] == pytest.approx(len(paid) * 0.05)
    assert report["paid_stopped_at"] is not None
    assert got.broadcast.max_stars == 5
    assert got.broadcast.stars_spent_estimate == pytest.approx(len(paid) * 0.05)
    assert got.broadcast.HasField("paid_stopped_at")


@on_sqlite
async def test_a_budget_needs_a_paid_broadcast(stack: Stack) -> None:
    body = {"message": "x", "user_ids": [1], "max_stars": 5}
    code, problem = await rest(stack, "POST", "/v1/broadcasts", body)
    assert code == 400
    assert problem["errors"][0]["field"] == "max_stars"
    body = {**body, "allow_paid_broadcast": True, "max_stars": 0}
    code, accepted = await rest(stack, "POST", "/v1/broadcasts", body)  # 0: no budget
    assert code == 202
    _, report = await rest(stack, "GET", f"/v1/broadcasts/{accepted['broadcast_id']}")
    assert (report["max_stars"], report["stars_spent_estimate"]) == (None, 0)
    async with stack.stub() as stub:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.SendMessage(
                pb.SendMessageRequest(
                    message="x", user_ids=[1], allow_paid_broadcast=True, max_stars=10**10
                ),
                metadata=stack.metadata,
            )
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "max_stars" in bad_request(refused.value)
