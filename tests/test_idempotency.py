"""Idempotency keys: "the same request" is the same validated request, whatever its spelling
— the audience as a set, JSON keys in any order, REST or gRPC."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from tests.fixtures.stack import Stack
from tgbroadcast.core.rules.idempotency import request_hash
from tgbroadcast.core.rules.validation import SendRequest, validate_send
from tgbroadcast.v1 import broadcast_pb2 as pb


def hashed(**fields: Any) -> str:
    request = SendRequest(message="hi", idempotency_key="k", **fields)
    return request_hash(validate_send(request, max_user_ids=100), request)


def test_the_audience_is_hashed_as_a_set() -> None:
    assert hashed(user_ids=[1, 2]) == hashed(user_ids=[2, 1]) == hashed(user_ids=[2, 1, 2])
    assert hashed(user_ids=[1, 2]) != hashed(user_ids=[1, 3])
    assert hashed(user_ids=[1, 2]) != hashed(user_ids=[1, 2, 3])
    # Sending keeps the request's order.
    new = validate_send(SendRequest(message="hi", user_ids=[3, 1, 2, 1]), max_user_ids=100)
    assert list(new.user_ids) == [3, 1, 2]


async def post_raw(stack: Stack, text: str, key: str) -> tuple[int, Any]:
    headers = {**stack.auth, "Content-Type": "application/json", "Idempotency-Key": key}
    async with (
        aiohttp.ClientSession() as session,
        session.post(stack.http_url + "/v1/broadcasts", data=text, headers=headers) as response,
    ):
        return response.status, await response.json(content_type=None)


async def test_equivalent_requests_replay_across_spellings_and_transports(stack: Stack) -> None:
    key = "order-2024-0001"
    status, first = await post_raw(
        stack,
        '{"message": "Sale!", "parse_mode": "html", "user_ids": [301, 302, 303]}',
        key,
    )
    assert status == 202, first
    assert "replayed" not in first
    # Keys in another order, the ids reordered and repeated: the same request.
    status, again = await post_raw(
        stack,
        json.dumps({"user_ids": [303, 301, 302, 301], "parse_mode": "html", "message": "Sale!"}),
        key,
    )
    assert (status, again["broadcast_id"], again.get("replayed")) == (
        202,
        first["broadcast_id"],
        True,
    )
    # The same request over gRPC.
    async with stack.stub() as stub:
        over_grpc = await stub.SendMessage(
            pb.SendMessageRequest(
                message="Sale!",
                parse_mode=pb.PARSE_MODE_HTML,
                user_ids=[302, 303, 301],
                idempotency_key=key,
            ),
            metadata=stack.metadata,
        )
    assert (over_grpc.broadcast_id, over_grpc.replayed) == (first["broadcast_id"], True)
    # Another audience under the same key is another request.
    status, problem = await post_raw(
        stack, '{"message": "Sale!", "parse_mode": "html", "user_ids": [301, 302]}', key
    )
    assert status == 409, problem
