"""One request, two transports: the same bad SendMessage names the same fields over gRPC and
REST, and the REST bodies take exactly the proto request's fields."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from pydantic import BaseModel

from tests.fixtures.grpc_details import bad_request
from tests.fixtures.refusals import MAX_USER_IDS, assert_nothing_written
from tests.fixtures.rest import get, send_raw
from tests.fixtures.stack import Stack
from tgbroadcast.server.rest import content, users
from tgbroadcast.v1 import broadcast_pb2 as pb

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


async def test_an_id_that_names_nothing_is_invalid_over_both(small_stack: Stack) -> None:
    """A broadcast id below 1 or a user id of 0 (a field left out) is INVALID_ARGUMENT on
    it, as REST's 400 for the same path — not NOT_FOUND, as if one might exist."""
    stack = small_stack
    calls = [
        ("GetBroadcast", pb.GetBroadcastRequest(broadcast_id=-1), "broadcast_id"),
        ("CancelBroadcast", pb.CancelBroadcastRequest(), "broadcast_id"),
        ("ListDeliveries", pb.ListDeliveriesRequest(), "broadcast_id"),
        ("GetUser", pb.GetUserRequest(), "user_id"),
        ("DeleteUser", pb.DeleteUserRequest(), "user_id"),
        (
            "PreviewMessage",
            pb.PreviewMessageRequest(message=as_proto({"message": "Hi"})),
            "user_id",
        ),
        ("PreviewMessage", pb.PreviewMessageRequest(user_id=1, broadcast_id=-5), "broadcast_id"),
    ]
    async with stack.stub() as stub:
        for method, request, field in calls:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await getattr(stub, method)(request, metadata=stack.metadata)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
            assert list(bad_request(raised.value)) == [field], method
    for path, field in (("/v1/broadcasts/-1", "broadcast_id"), ("/v1/users/0", "user_id")):
        status, problem = await get(stack, path)
        assert (status, [e["field"] for e in problem["errors"]]) == (400, [field]), path
    status, _, problem = await send_raw(
        stack, json.dumps({"user_id": 1, "broadcast_id": -5}).encode(), path="/v1/preview"
    )
    assert (status, [e["field"] for e in problem["errors"]]) == (400, ["broadcast_id"])


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
            users.UserBody,
            {"active", "created_at", "updated_at", "blocked_reason", "blocked_at"},
        ),
        (pb.UpsertUsersRequest, users.UpsertUsersBody, set()),
    ],
)
def test_rest_bodies_take_the_proto_request_fields(
    message: Any, model: type[BaseModel], elsewhere: set[str]
) -> None:
    assert set(message.DESCRIPTOR.fields_by_name) - elsewhere == set(model.model_fields)


async def test_a_previews_message_fields_are_named_under_message(small_stack: Stack) -> None:
    """Every refusal of a preview's message names its field under ``message.``: its bot
    and an album item's data too, as its text's."""
    stack = small_stack
    for body, field in (
        ({"message": "hi", "bot": "nobody"}, "message.bot"),
        (
            {"media_type": "album", "album": [{"media_type": "photo", "media_data": "!!"}] * 2},
            "message.album[0].media_data",
        ),
    ):
        status, _, problem = await send_raw(
            stack, json.dumps({"message": body, "user_id": 1}).encode(), path="/v1/preview"
        )
        assert status == 400, (body, problem)
        assert field in {e["field"] for e in problem["errors"]}, problem
    async with stack.stub() as stub:
        request = pb.PreviewMessageRequest(message=as_proto({"message": "hi"}), user_id=1)
        request.message.bot = "nobody"
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.PreviewMessage(request, metadata=stack.metadata)
    assert list(bad_request(raised.value)) == ["message.bot"]
