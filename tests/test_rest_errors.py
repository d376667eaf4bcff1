"""Bad input over REST: a precise problem+json answer naming the field, query parameter or
line, and nothing written."""

from __future__ import annotations

import base64
import json
from typing import Any

import aiohttp
import grpc
import pytest

from tests.fixtures.environ import AUTH
from tests.fixtures.grpc_details import bad_request
from tests.fixtures.refusals import MAX_BODY, MAX_USER_IDS, assert_nothing_written
from tests.fixtures.rest import get, post, send_raw
from tests.fixtures.stack import Stack
from tests.fixtures.watching import watch
from tgbroadcast.core.rules import page_tokens
from tgbroadcast.v1 import broadcast_pb2 as pb

BAD_BODIES: list[tuple[str, Any, dict[str, str]]] = [
    ("no audience", {"message": "hi"}, {"user_ids": "all_users"}),
    (
        "both audiences",
        {"message": "hi", "user_ids": [1], "all_users": True},
        {"all_users": "not both"},
    ),
    (
        "unknown field",
        {"message": "hi", "user_ids": [1], "chat_ids": [2]},
        {"chat_ids": "not a known field"},
    ),
    ("string id", {"message": "hi", "user_ids": [1, "2"]}, {"user_ids[1]": "valid integer"}),
    ("float id", {"message": "hi", "user_ids": [1.5]}, {"user_ids[0]": "valid integer"}),
    ("bool flag as string", {"message": "hi", "all_users": "yes"}, {"all_users": "valid boolean"}),
    ("zero id", {"message": "hi", "user_ids": [0]}, {"user_ids[0]": "not a Telegram chat id"}),
    ("huge id", {"message": "hi", "user_ids": [2**70]}, {"user_ids[0]": "not a 64-bit integer"}),
    (
        "huge id among many",
        {"message": "hi", "user_ids": [*range(1, 1000), 2**63, 5]},
        {"user_ids[999]": "not a 64-bit integer"},
    ),
    (
        "huge number nested in a mixed list",
        {"message": "hi", "user_ids": [1], "reply_markup": ["a", {"x": -(2**63) - 1}]},
        {"reply_markup[1].x": "not a 64-bit integer"},
    ),
    (
        "unknown media type",
        {"message": "hi", "media_type": "gif", "media_url": "https://x/y", "user_ids": [1]},
        {"media_type": "unknown media type 'gif'"},
    ),
    (
        "media without url",
        {"message": "hi", "media_type": "photo", "user_ids": [1]},
        {"media_url": "required for media_type photo"},
    ),
    (
        "url without media",
        {"message": "hi", "media_url": "https://x/y.png", "user_ids": [1]},
        {"media_url": "only for media"},
    ),
    (
        "bad media url",
        {"media_type": "photo", "media_url": "ftp://x/y.png", "user_ids": [1]},
        {"media_url": "http(s) URL or a Telegram file_id"},
    ),
    ("empty text", {"message": "   ", "user_ids": [1]}, {"message": "must not be empty"}),
    ("missing text", {"user_ids": [1]}, {"message": "must not be empty"}),
    (
        "text too long",
        {"message": "x" * 4097, "user_ids": [1]},
        {"message": "4097 characters; Telegram allows at most 4096"},
    ),
    (
        "emoji count as two",
        {"message": "😀" * 2049, "user_ids": [1]},
        {"message": "4098 characters"},
    ),
    (
        "caption too long",
        {
            "message": "x" * 1025,
            "media_type": "photo",
            "media_url": "https://x/y.png",
            "user_ids": [1],
        },
        {"message": "at most 1024"},
    ),
    (
        "caption on a sticker",
        {
            "message": "no",
            "media_type": "sticker",
            "media_url": "https://x/y.webp",
            "user_ids": [1],
        },
        {"message": "takes no caption"},
    ),
    (
        "over the cap",
        {"message": "hi", "user_ids": list(range(1, MAX_USER_IDS + 2))},
        {"user_ids": "at most 5 per request"},
    ),
]


async def test_bad_send_message_bodies(small_stack: Stack) -> None:
    for name, body, violations in BAD_BODIES:
        status, content_type, problem = await send_raw(small_stack, json.dumps(body).encode())
        assert (status, content_type) == (400, "application/problem+json"), name
        assert problem["status"] == 400
        assert problem["title"] == "Bad Request"
        errors = {e["field"]: e["message"] for e in problem["errors"]}
        for field, text in violations.items():
            assert field in errors, (name, problem)
            assert text in errors[field], (name, problem)
            assert field in problem["detail"], name
    await assert_nothing_written(small_stack)


async def test_an_id_of_more_digits_than_python_converts_is_named(small_stack: Stack) -> None:
    body = b'{"message": "hi", "user_ids": [1, ' + b"9" * 5000 + b"]}"
    status, _, problem = await send_raw(small_stack, body)
    assert status == 400
    errors = {e["field"]: e["message"] for e in problem["errors"]}
    assert "not a 64-bit integer" in errors["user_ids[1]"]
    await assert_nothing_written(small_stack)


async def test_malformed_requests(small_stack: Stack) -> None:
    status, content_type, problem = await send_raw(small_stack, b'{"message": "hi", ')
    assert (status, content_type) == (400, "application/problem+json")
    assert problem["errors"][0]["field"] == "body"
    assert "not valid JSON" in problem["detail"]

    status, _, problem = await send_raw(small_stack, b"[1, 2]")
    assert status == 400
    assert problem["detail"] == "body: must be a JSON object"

    status, _, problem = await send_raw(small_stack, b"[" * 20_000 + b"]" * 20_000)
    assert status == 400
    assert problem["detail"] == "body: is nested too deeply"

    status, _, problem = await send_raw(
        small_stack,
        b'{"users": [{"id": 1, "first_name": "\\ud800"}]}',
        path="/v1/users",
    )
    assert status == 400
    assert problem["errors"][0]["field"] == "users[0].first_name"

    status, _, problem = await send_raw(small_stack, b"message=hi", content_type="text/plain")
    assert status == 415
    assert "application/json" in problem["detail"]

    status, _, problem = await send_raw(small_stack, b"x" * (MAX_BODY + 1))
    assert status == 413
    assert str(MAX_BODY) in problem["detail"]

    status, _, problem = await send_raw(
        small_stack, b'{"users": [{"id": 1}, {"id": 1, "nick": "x"}]}', path="/v1/users"
    )
    assert status == 400
    assert {e["field"] for e in problem["errors"]} == {"users[1].nick"}

    status, _, problem = await send_raw(
        small_stack, b'{"users": [{"id": 1}, {"id": 1}]}', path="/v1/users"
    )
    assert status == 400
    assert problem["errors"] == [
        {"field": "users[1].id", "message": "1 is given twice (also users[0])"}
    ]
    await assert_nothing_written(small_stack)


async def test_unknown_ids_and_routes(small_stack: Stack) -> None:
    async with aiohttp.ClientSession(headers=AUTH) as session:
        async with session.get(small_stack.http_url + "/v1/broadcasts/999") as response:
            assert response.status == 404
            assert response.content_type == "application/problem+json"
            assert (await response.json(content_type=None))["detail"] == "broadcast 999 not found"
        async with session.get(small_stack.http_url + "/v1/broadcasts/abc") as response:
            assert response.status == 400
        async with session.get(small_stack.http_url + "/v1/nothing-here") as response:
            assert response.status == 404
            assert response.content_type == "application/problem+json"
        async with session.get(small_stack.http_url + "/v1/users?page_size=5000") as response:
            assert response.status == 400
            problem = await response.json(content_type=None)
            assert problem["errors"][0]["field"] == "page_size"
        async with session.get(small_stack.http_url + "/v1/users?page_token=bogus") as response:
            assert response.status == 400
        huge = page_tokens.encode(page_tokens.USERS, 2**70)
        async with session.get(small_stack.http_url + f"/v1/users?page_token={huge}") as response:
            assert response.status == 400
            assert (await response.json(content_type=None))["errors"][0]["field"] == "page_token"


async def test_every_route_refuses_an_unknown_query_parameter(small_stack: Stack) -> None:
    stack = small_stack
    assert (await post(stack, "/v1/users", {"users": [{"id": 7}]}))[0] == 200
    status, answer = await post(stack, "/send-message", {"message": "hi", "user_ids": [7]})
    assert status == 202, answer
    broadcast = f"/v1/broadcasts/{answer['broadcast_id']}"
    send = {"json": {"message": "hi", "user_ids": [8]}}
    routes: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", broadcast, {}),
        ("GET", "/v1/users/7", {}),
        ("DELETE", "/v1/users/7", {}),
        ("POST", broadcast + "/pause", {}),
        ("POST", broadcast + "/resume", {}),
        ("POST", broadcast + "/cancel", {}),
        ("GET", broadcast + "/events", {}),
        ("GET", broadcast + "/deliveries", {}),
        ("GET", broadcast + "/deliveries.csv", {}),
        ("GET", "/v1/broadcasts", {}),
        ("GET", "/v1/users", {}),
        ("POST", "/v1/users", {"json": {"users": [{"id": 8}]}}),
        ("POST", "/v1/users/import", {"data": b"id\n8\n", "headers": {"Content-Type": "text/csv"}}),
        ("POST", "/v1/broadcasts", send),
        ("POST", "/send-message", send),
        ("POST", "/v1/preview", {"json": {"message": {"message": "hi"}, "user_id": 7}}),
    ]
    async with aiohttp.ClientSession(headers=AUTH) as session:
        for method, path, body in routes:
            async with session.request(
                method, stack.http_url + path, params={"statuss": "queued"}, **body
            ) as response:
                assert response.status == 400, (method, path)
                problem = await response.json(content_type=None)
            assert problem["errors"] == [
                {"field": "statuss", "message": "is not a known query parameter"}
            ], (method, path)
    users = await stack.running.backends.store.list_users(after=None, limit=10)
    assert [user.id for user in users.users] == [7]  # neither deleted nor upserted
    status, listed = await get(stack, "/v1/broadcasts")
    assert [b["broadcast_id"] for b in listed["broadcasts"]] == [answer["broadcast_id"]]
    assert (await get(stack, broadcast))[1]["status"] != "cancelled"


async def test_rest_names_query_parameters_where_grpc_names_request_fields(
    small_stack: Stack,
) -> None:
    stack = small_stack
    async with aiohttp.ClientSession(headers=AUTH) as session:
        cases = [
            ("/v1/users", [("tag", "vip"), ("tag", "BAD TAG")], {"tag[1]"}),
            ("/v1/users", [("language_code", "e n")], {"language_code[0]"}),
            ("/v1/users", [("tag", str(n)) for n in range(101)], {"tag"}),
            ("/v1/broadcasts", [("status", "queued"), ("status", "done")], {"status[1]"}),
            ("/v1/broadcasts/1/deliveries", [("outcome", "sent,lost")], {"outcome[1]"}),
            ("/v1/broadcasts/1/deliveries.csv", [("outcome", "lost")], {"outcome[0]"}),
        ]
        for path, query, fields in cases:
            async with session.get(stack.http_url + path, params=query) as response:
                assert response.status == 400, (path, query)
                problem = await response.json(content_type=None)
            assert {e["field"] for e in problem["errors"]} == fields, (path, problem)
            assert all(field in problem["detail"] for field in fields)
    async with stack.stub() as stub:
        for user_filter, fields in [
            (pb.UserFilter(tags=["vip", "BAD TAG"]), {"filter.tags[1]"}),
            (pb.UserFilter(language_codes=["e n"]), {"filter.language_codes[0]"}),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.ListUsers(
                    pb.ListUsersRequest(filter=user_filter), metadata=stack.metadata
                )
            assert set(bad_request(raised.value)) == fields
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.ListDeliveries(
                pb.ListDeliveriesRequest(
                    broadcast_id=1,
                    outcomes=[pb.DELIVERY_OUTCOME_SENT, pb.DELIVERY_OUTCOME_UNSPECIFIED],
                ),
                metadata=stack.metadata,
            )
        assert set(bad_request(raised.value)) == {"outcomes[1]"}


def tampered_tokens(kind: str, valid: str) -> dict[str, str]:
    """Tokens this service never issued for the list ``kind``, each wrong a different way."""
    other = page_tokens.BROADCASTS if kind == page_tokens.USERS else page_tokens.USERS

    def raw(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    return {
        "not base64": "%%%",
        "bad padding": valid + "A",
        "another list's": page_tokens.encode(other, 5),
        "no position": raw(f"{kind}:"),
        "position not a number": raw(f"{kind}:abc"),
        "position with a sign in the middle": raw(f"{kind}:1-2"),
        "position out of range": page_tokens.encode(kind, 2**70),
        "not utf-8": base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        "flipped character": ("A" if valid[0] != "A" else "B") + valid[1:],
    }


async def test_tampered_page_tokens_are_refused_naming_page_token(small_stack: Stack) -> None:
    stack = small_stack
    users = [{"id": n} for n in (71, 72, 73)]
    assert (await post(stack, "/v1/users", {"users": users}))[0] == 200
    status, sent = await post(stack, "/v1/broadcasts", {"message": "hi", "user_ids": [71, 72, 73]})
    assert status == 202, sent
    await watch(stack, sent["broadcast_id"])
    await post(stack, "/v1/broadcasts", {"message": "again", "user_ids": [71]})
    lists = {
        "users": ("/v1/users", page_tokens.USERS),
        "broadcasts": ("/v1/broadcasts", page_tokens.BROADCASTS),
        "deliveries": (f"/v1/broadcasts/{sent['broadcast_id']}/deliveries", page_tokens.USERS),
    }
    async with aiohttp.ClientSession(headers=AUTH) as session:
        for name, (path, kind) in lists.items():
            async with session.get(stack.http_url + path, params={"page_size": "1"}) as response:
                first = await response.json()
            valid = first["next_page_token"]
            assert valid, name
            async with session.get(
                stack.http_url + path, params={"page_size": "1", "page_token": valid}
            ) as response:
                assert response.status == 200, name
            for how, token in tampered_tokens(kind, valid).items():
                async with session.get(
                    stack.http_url + path, params={"page_token": token}
                ) as response:
                    assert response.status == 400, (name, how)
                    assert response.content_type == "application/problem+json"
                    problem = await response.json(content_type=None)
                assert [e["field"] for e in problem["errors"]] == ["page_token"], (name, how)
                assert problem["errors"][0]["message"].startswith("is not a token"), (name, how)
                assert token not in problem["detail"], (name, how)
