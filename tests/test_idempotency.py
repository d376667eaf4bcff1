"""Idempotency keys: "the same request" is the same validated request, whatever its spelling
— the audience as a set, JSON keys in any order, REST or gRPC."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import aiohttp

from tests.fixtures.stack import Stack
from tgbroadcast.core.domain.content import Entity
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


def test_a_request_with_entities_hashes_as_before_entities_had_date_times() -> None:
    """The hash of a request with entities, as servers before Bot API 10.1's ``date_time``
    made it (pinned): a retry across an upgrade replays its broadcast, not a 409."""
    entities = [
        Entity(type="bold", offset=0, length=5),
        Entity(type="text_link", offset=6, length=5, url="https://w.org"),
    ]
    request = SendRequest(
        message="Hello world", idempotency_key="k", user_ids=[1, 2], entities=entities
    )
    assert request_hash(validate_send(request, max_user_ids=100), request) == (
        "7e5d3733ec06b9778dfff9a882c0cbe435baee7664c967e4eb11c3e0cb9554ec"
    )
    # An empty format is the default, as none is (REST sends "", gRPC leaves it unset).
    noon = Entity(type="date_time", offset=0, length=2, unix_time=0)
    assert hashed(user_ids=[1], entities=[noon]) == hashed(
        user_ids=[1], entities=[Entity(**{**dataclasses.asdict(noon), "date_time_format": ""})]
    )
    assert hashed(user_ids=[1], entities=[noon]) != hashed(
        user_ids=[1], entities=[Entity(**{**dataclasses.asdict(noon), "unix_time": 1})]
    )


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
