"""Bad input over REST: a precise problem+json answer, and nothing written."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from broadcasting.validation import encode_page_token
from simulator import Simulator
from tests.fixtures.stack import API_TOKEN, Backend, Stack, start_stack

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
MAX_USER_IDS = 5
MAX_BODY = 65536


@pytest.fixture
async def small_stack(backend: Backend, simulator: Simulator) -> AsyncIterator[Stack]:
    overrides = {
        "TGB_SERVER_MAX_USER_IDS": str(MAX_USER_IDS),
        "TGB_SERVER_MAX_BODY_BYTES": str(MAX_BODY),
    }
    async with start_stack(backend, simulator, overrides) as stack:
        yield stack


async def send_raw(
    stack: Stack,
    data: bytes,
    *,
    content_type: str = "application/json",
    path: str = "/send-message",
) -> tuple[int, str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            stack.http_url + path, data=data, headers={**AUTH, "Content-Type": content_type}
        ) as response,
    ):
        return response.status, response.content_type, await response.json(content_type=None)


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
    ("huge id", {"message": "hi", "user_ids": [2**70]}, {"user_ids[0]": "not a Telegram chat id"}),
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
        huge = encode_page_token(2**70)
        async with session.get(small_stack.http_url + f"/v1/users?page_token={huge}") as response:
            assert response.status == 400
            assert (await response.json(content_type=None))["errors"][0]["field"] == "page_token"


async def test_multipart_limits(small_stack: Stack) -> None:
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("media_type", "document")
    form.add_field("user_ids", "[1]")
    for _ in range(3):  # each part under the limit, the body over it
        form.add_field("message", "x" * (MAX_BODY // 2))
    async with (
        aiohttp.ClientSession(headers=AUTH) as session,
        session.post(small_stack.http_url + "/send-message", data=form) as response,
    ):
        assert response.status == 413
    form = aiohttp.FormData()
    form.add_field("media_type", "document")
    form.add_field("user_ids", "[1]")
    form.add_field("media", b"one", filename="a.pdf")
    form.add_field("media", b"two", filename="b.pdf")
    async with (
        aiohttp.ClientSession(headers=AUTH) as session,
        session.post(small_stack.http_url + "/send-message", data=form) as response,
    ):
        assert response.status == 400
        problem = await response.json(content_type=None)
    assert problem["errors"] == [{"field": "media", "message": "is given twice"}]
    await assert_nothing_written(small_stack)


async def assert_nothing_written(stack: Stack) -> None:
    store = stack.running.backends.store
    page = await store.list_users(after=None, limit=10)
    assert page.users == ()
    assert await store.undispatched_broadcasts() == []
    async with (
        aiohttp.ClientSession(headers=AUTH) as session,
        session.get(stack.http_url + "/v1/broadcasts/1") as response,
    ):
        assert response.status == 404
    assert stack.simulator.calls == ()
