"""Bad input over REST: a precise problem+json answer, and nothing written."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf import json_format
from pydantic import BaseModel

from tests.fixtures.stack import API_TOKEN, Backend, Stack, start_stack
from tests.test_service import assert_watch_complete, get, post, watch
from tests.test_users_api import bad_request
from tgbroadcast.core.rules import page_tokens
from tgbroadcast.server.rest import app, content
from tgbroadcast.simulator import Simulator
from tgbroadcast.v1 import broadcast_pb2 as pb

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
        huge = page_tokens.encode(page_tokens.USERS, 2**70)
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


# -- multipart/form-data carries every field of the JSON body ---------------------------------


async def post_form(
    stack: Stack,
    fields: dict[str, str],
    *,
    media: bytes | None = None,
    path: str = "/v1/broadcasts",
) -> tuple[int, Any]:
    form = aiohttp.FormData(default_to_multipart=True)
    for name, value in fields.items():
        form.add_field(name, value)
    if media is not None:
        form.add_field("media", media, filename="report.pdf")
    async with (
        aiohttp.ClientSession(headers=AUTH) as session,
        session.post(stack.http_url + path, data=form) as response,
    ):
        return response.status, await response.json(content_type=None)


async def test_a_multipart_send_carries_the_structured_fields(small_stack: Stack) -> None:
    stack = small_stack
    users = [
        {"id": 41, "first_name": "Ann", "tags": ["vip"], "language_code": "en"},
        {"id": 42, "first_name": "Bo", "tags": ["vip"], "language_code": "de"},
        {"id": 43, "first_name": "Cy", "language_code": "en"},
    ]
    assert (await post(stack, "/v1/users", {"users": users}))[0] == 200
    keyboard = {"rows": [{"buttons": [{"text": "Open", "url": "https://example.com/r"}]}]}
    status, answer = await post_form(
        stack,
        {
            "media_type": "document",
            "message": "Report for May",
            "entities": json.dumps([{"type": "bold", "offset": 0, "length": 6}]),
            "filter": json.dumps({"tags": ["VIP"], "language_codes": ["en"]}),
            "disable_notification": "true",
            "protect_content": "True",
            "reply_markup": json.dumps(keyboard),
        },
        media=b"%PDF-1.4 report",
    )
    assert status == 202, answer
    assert answer["total"] == 1  # only user 41 is a vip speaking en
    assert_watch_complete(await watch(stack, answer["broadcast_id"]), {41})
    (call,) = stack.simulator.calls
    assert call.method == "sendDocument"
    assert call.params["chat_id"] == 41
    assert call.params["caption"] == "Report for May"
    assert call.params["caption_entities"] == [{"type": "bold", "offset": 0, "length": 6}]
    assert call.params["disable_notification"] is True
    assert call.params["protect_content"] is True
    assert call.params["reply_markup"] == {
        "inline_keyboard": [[{"text": "Open", "url": "https://example.com/r"}]]
    }


async def test_a_multipart_send_can_be_scheduled_and_replayed(small_stack: Stack) -> None:
    stack = small_stack
    album = [
        {"media_type": "photo", "media_url": "AgACAgIAAxkBAAIBQ2V", "caption": "<b>{id}</b>"},
        {"media_type": "photo", "media_url": "AgACAgIAAxkBAAIBRGV", "caption": "two"},
    ]
    fields = {
        "media_type": "album",
        "album": json.dumps(album),
        "parse_mode": "html",
        "personalize": "true",
        "user_ids": "[51, 52]",
        "send_at": "2099-01-01T09:00:00Z",
        "idempotency_key": "multipart-album",
        "allow_paid_broadcast": "false",
    }
    status, first = await post_form(stack, fields)
    assert status == 202, first
    assert first == {"broadcast_id": first["broadcast_id"], "status": "scheduled", "total": 2}
    status, again = await post_form(stack, fields, path="/send-message")
    assert (status, again) == (202, {**first, "replayed": True})
    status, other = await post_form(stack, {**fields, "user_ids": "[51]"})
    assert status == 409, other
    status, broadcast = await get(stack, f"/v1/broadcasts/{first['broadcast_id']}")
    assert status == 200
    assert broadcast["send_at"] == "2099-01-01T09:00:00Z"
    assert broadcast["idempotency_key"] == "multipart-album"
    assert broadcast["parse_mode"] == "html"
    assert broadcast["media_type"] == "album"
    assert stack.simulator.calls == ()


MULTIPART_BAD_FIELDS: list[tuple[dict[str, str], set[str]]] = [
    ({"filter": "vip"}, {"filter"}),
    ({"filter": '{"tags": ["BAD TAG"]}'}, {"filter.tags[0]"}),
    ({"filter": '{"tag": ["vip"]}'}, {"filter.tag"}),
    ({"filter": '{"tags": ["vip"]}', "all_users": "true"}, {"filter"}),
    (
        {"user_ids": "[1]", "entities": '[{"type": "bold"}]'},
        {"entities[0].offset", "entities[0].length"},
    ),
    ({"user_ids": "[1]", "reply_markup": '{"rows": 1}'}, {"reply_markup.rows"}),
    ({"user_ids": "[1]", "personalize": "yes"}, {"personalize"}),
    (
        {"user_ids": "[1]", "link_preview_options": '{"is_disabled": "yes"}'},
        {"link_preview_options.is_disabled"},
    ),
    ({"user_ids": "[1]", "source": "[1, 2]"}, {"source"}),
    ({"user_ids": "[1]", "send_at": "tomorrow"}, {"send_at"}),
    ({"user_ids": "[1]", "parse_mode": "bbcode"}, {"parse_mode"}),
    ({"user_ids": "[1]", "album": "[{]"}, {"album"}),
    ({"user_ids": '[1, "2"]'}, {"user_ids[1]"}),
]


async def test_multipart_errors_name_the_form_field(small_stack: Stack) -> None:
    for fields, expected in MULTIPART_BAD_FIELDS:
        status, problem = await post_form(small_stack, {"message": "hi", **fields}, media=None)
        assert status == 400, (fields, problem)
        assert {e["field"] for e in problem["errors"]} == expected, (fields, problem)
    await assert_nothing_written(small_stack)


# -- query parameters -------------------------------------------------------------------------


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


# -- the same bad SendMessage over gRPC and REST ----------------------------------------------

_ENUM_PREFIXES = {"media_type": "MEDIA_TYPE_", "parse_mode": "PARSE_MODE_"}


def as_proto(body: dict[str, Any]) -> pb.SendMessageRequest:
    """The REST body as the proto request (enum spellings and the rest per the JSON mapping)."""

    def enums(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                key: _ENUM_PREFIXES[key] + item.upper()
                if key in _ENUM_PREFIXES and isinstance(item, str)
                else enums(item)
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [enums(item) for item in value]
        return value

    return json_format.ParseDict(enums(body), pb.SendMessageRequest())


PARITY_BODIES: list[tuple[str, dict[str, Any]]] = [
    ("no audience", {"message": "hi"}),
    ("two audiences", {"message": "hi", "user_ids": [1], "filter": {"tags": ["vip"]}}),
    ("zero id", {"message": "hi", "user_ids": [3, 0, -5]}),
    ("too many ids", {"message": "hi", "user_ids": list(range(1, MAX_USER_IDS + 2))}),
    ("bad tag", {"message": "hi", "filter": {"tags": ["ok", "NO WAY"], "language_codes": ["!"]}}),
    ("media without url", {"message": "hi", "media_type": "photo", "user_ids": [1]}),
    ("url without media", {"message": "hi", "media_url": "https://x/y.png", "user_ids": [1]}),
    ("empty text", {"message": " ", "user_ids": [1]}),
    (
        "long caption",
        {"message": "x" * 1025, "media_type": "photo", "media_url": "https://x/y", "user_ids": [1]},
    ),
    (
        "sticker caption",
        {"message": "no", "media_type": "sticker", "media_url": "https://x/y", "user_ids": [1]},
    ),
    (
        "bad entity",
        {
            "message": "hi",
            "entities": [{"type": "bold", "offset": 1, "length": 5}],
            "user_ids": [1],
        },
    ),
    (
        "entities with parse mode",
        {
            "message": "hi",
            "parse_mode": "html",
            "entities": [{"type": "bold", "offset": 0, "length": 2}],
            "user_ids": [1],
        },
    ),
    ("bad html", {"message": "<b>hi", "parse_mode": "html", "user_ids": [1]}),
    (
        "button no action",
        {
            "message": "hi",
            "reply_markup": {"rows": [{"buttons": [{"text": "x"}]}]},
            "user_ids": [1],
        },
    ),
    (
        "album of one",
        {
            "media_type": "album",
            "album": [{"media_type": "photo", "media_url": "https://x/1.png"}],
            "user_ids": [1],
        },
    ),
    (
        "album mixing kinds",
        {
            "media_type": "album",
            "album": [
                {"media_type": "photo", "media_url": "https://x/1.png"},
                {"media_type": "audio", "media_url": "https://x/2.mp3"},
            ],
            "user_ids": [1],
        },
    ),
    ("copy without source", {"media_type": "copy", "user_ids": [1]}),
    ("bad template", {"message": "Hi {nickname}", "personalize": True, "user_ids": [1]}),
    ("unclosed template", {"message": "Hi {first_name", "personalize": True, "user_ids": [1]}),
    (
        "callback without secret",
        {"message": "hi", "callback_url": "https://example.com/h", "user_ids": [1]},
    ),
    ("long key", {"message": "hi", "idempotency_key": "k" * 256, "user_ids": [1]}),
    (
        "preview both sizes",
        {
            "message": "hi https://x.y",
            "link_preview_options": {"prefer_small_media": True, "prefer_large_media": True},
            "user_ids": [1],
        },
    ),
]


async def test_grpc_and_rest_name_the_same_fields(small_stack: Stack) -> None:
    stack = small_stack
    async with stack.stub() as stub:
        for name, body in PARITY_BODIES:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.SendMessage(as_proto(body), metadata=stack.metadata)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
            over_grpc = set(bad_request(raised.value))
            status, _, problem = await send_raw(stack, json.dumps(body).encode())
            assert status == 400, (name, problem)
            over_rest = {e["field"] for e in problem["errors"]}
            assert over_grpc, name
            assert over_rest == over_grpc, name
            preview = pb.PreviewMessageRequest(message=as_proto(body), user_id=1)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.PreviewMessage(preview, metadata=stack.metadata)
            status, _, problem = await send_raw(
                stack, json.dumps({"message": body, "user_id": 1}).encode(), path="/v1/preview"
            )
            if raised.value.code() == grpc.StatusCode.NOT_FOUND:
                # Only the audience was wrong, which a preview ignores: user 1 is unknown.
                assert status == 404, (name, problem)
                continue
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
            assert status == 400, (name, problem)
            preview_fields = set(bad_request(raised.value))
            assert all(field.startswith("message.") for field in preview_fields), name
            assert {e["field"] for e in problem["errors"]} == preview_fields, name
    await assert_nothing_written(stack)


@pytest.mark.parametrize(
    ("message", "model", "elsewhere"),
    [
        # The file and its name travel as the multipart part `media` (its filename).
        (pb.SendMessageRequest, content.SendMessageBody, {"media_data", "media_filename"}),
        (pb.UserFilter, content.UserFilterBody, set()),
        (pb.MessageEntity, content.EntityBody, set()),
        (pb.InlineKeyboardMarkup, content.KeyboardBody, set()),
        (pb.InlineKeyboardRow, content.RowBody, set()),
        (pb.InlineKeyboardButton, content.ButtonBody, set()),
        (pb.LinkPreviewOptions, content.LinkPreviewBody, set()),
        (pb.AlbumItem, content.AlbumItemBody, set()),
        (pb.MessageRef, content.SourceBody, set()),
        (pb.PreviewMessageRequest, content.PreviewBody, set()),
        # Output only: the service sets them.
        (
            pb.User,
            app.UserBody,
            {"active", "created_at", "updated_at", "blocked_reason", "blocked_at"},
        ),
        (pb.UpsertUsersRequest, app.UpsertUsersBody, set()),
    ],
)
def test_rest_bodies_take_the_proto_request_fields(
    message: Any, model: type[BaseModel], elsewhere: set[str]
) -> None:
    assert set(message.DESCRIPTOR.fields_by_name) - elsewhere == set(model.model_fields)


PARSE_MODE_SPELLINGS = [
    ("HTML", "<b>hi</b>", "html", "HTML"),
    ("html", "<b>hi</b>", "html", "HTML"),
    ("Html", "<b>hi</b>", "html", "HTML"),
    ("MarkdownV2", "*hi*", "markdown_v2", "MarkdownV2"),
    ("markdown_v2", "*hi*", "markdown_v2", "MarkdownV2"),
    ("markdownv2", "*hi*", "markdown_v2", "MarkdownV2"),
    ("MARKDOWN_V2", "*hi*", "markdown_v2", "MarkdownV2"),
]


async def test_parse_mode_takes_telegrams_spellings_in_json_and_multipart(
    small_stack: Stack,
) -> None:
    stack = small_stack
    chat = 60
    for spelling, text, canonical, telegram in PARSE_MODE_SPELLINGS:
        for transport in ("json", "multipart"):
            chat += 1
            fields = {"message": text, "parse_mode": spelling}
            if transport == "json":
                status, answer = await post(stack, "/v1/broadcasts", {**fields, "user_ids": [chat]})
            else:
                status, answer = await post_form(stack, {**fields, "user_ids": f"[{chat}]"})
            assert status == 202, (spelling, transport, answer)
            assert_watch_complete(await watch(stack, answer["broadcast_id"]), {chat})
            status, broadcast = await get(stack, f"/v1/broadcasts/{answer['broadcast_id']}")
            assert (status, broadcast["parse_mode"]) == (200, canonical), spelling
            (call,) = [c for c in stack.simulator.calls if c.params.get("chat_id") == chat]
            assert (call.params["parse_mode"], call.params["text"]) == (telegram, text)
        status, preview = await post(
            stack,
            "/v1/preview",
            {"message": {"message": text, "parse_mode": spelling}, "user_id": chat},
        )
        assert (status, preview["parse_mode"]) == (200, canonical), preview


async def test_an_unknown_parse_mode_is_refused_naming_the_field(small_stack: Stack) -> None:
    for body in ({"parse_mode": "Markdown"}, {"parse_mode": "HTML5"}):
        status, problem = await post(
            small_stack, "/v1/broadcasts", {"message": "hi", "user_ids": [1], **body}
        )
        assert status == 400, problem
        assert [e["field"] for e in problem["errors"]] == ["parse_mode"]
        assert "html, markdown_v2" in problem["errors"][0]["message"]
    status, problem = await post_form(
        small_stack, {"message": "hi", "user_ids": "[1]", "parse_mode": "Markdown"}
    )
    assert (status, [e["field"] for e in problem["errors"]]) == (400, ["parse_mode"])
    await assert_nothing_written(small_stack)


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
