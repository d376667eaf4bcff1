"""Text content through server and worker: formatting, entities, keyboards and flags reach
the simulated Telegram with spec-valid parameters; what is refused is refused early."""

from __future__ import annotations

from typing import Any

import aiohttp
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.fixtures.content import PHOTO
from tests.fixtures.rest import get, post
from tests.fixtures.stack import Stack
from tests.fixtures.telegram import BOT_ID, BOT_TOKEN, spec_problems
from tests.fixtures.watching import assert_watch_complete, watch
from tgbroadcast.core.rules.formatting import parse
from tgbroadcast.v1 import broadcast_pb2 as pb


async def test_formatted_text_with_keyboard_and_flags(stack: Stack) -> None:
    """On every backend: all text options reach Telegram and the broadcast reads back."""
    markup = {
        "rows": [
            {"buttons": [{"text": "Open", "url": "https://example.com/sale"}]},
            {
                "buttons": [
                    {"text": "Yes", "callback_data": "vote:yes"},
                    {"text": "No", "callback_data": "vote:no"},
                ]
            },
        ]
    }
    status, body = await post(
        stack,
        "/v1/broadcasts",
        {
            "message": "<b>Sale</b> ends <i>today</i> &amp; tomorrow",
            "parse_mode": "html",
            "reply_markup": markup,
            "disable_notification": True,
            "protect_content": True,
            "link_preview_options": {"url": "https://example.com/sale", "prefer_small_media": True},
            "user_ids": [51, 52],
        },
    )
    assert status == 202, body
    assert_watch_complete(await watch(stack, body["broadcast_id"]), {51, 52})
    calls = stack.simulator.calls
    assert [c.method for c in calls] == ["sendMessage", "sendMessage"]
    for call in calls:
        assert call.ok, call
        assert call.params["parse_mode"] == "HTML"
        assert call.params["disable_notification"] is True
        assert call.params["protect_content"] is True
        assert call.params["reply_markup"] == {
            "inline_keyboard": [
                [{"text": "Open", "url": "https://example.com/sale"}],
                [
                    {"text": "Yes", "callback_data": "vote:yes"},
                    {"text": "No", "callback_data": "vote:no"},
                ],
            ]
        }
        assert call.params["link_preview_options"] == {
            "url": "https://example.com/sale",
            "prefer_small_media": True,
        }
        assert "allow_paid_broadcast" not in call.params
        assert spec_problems(dict(call.params), "sendMessage") == []
    message = stack.simulator.messages_by_chat(BOT_ID)[51][0]
    assert message["text"] == "Sale ends today & tomorrow"
    assert message["entities"] == [
        {"type": "bold", "offset": 0, "length": 4},
        {"type": "italic", "offset": 10, "length": 5},
    ]
    status, broadcast = await get(stack, f"/v1/broadcasts/{body['broadcast_id']}")
    assert (status, broadcast["parse_mode"]) == (200, "html")


async def test_explicit_entities_and_captions_over_grpc(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    async with stack.stub() as stub:
        sent = await stub.SendMessage(
            pb.SendMessageRequest(
                message="Hello world",
                entities=[
                    pb.MessageEntity(type="bold", offset=0, length=5),
                    pb.MessageEntity(type="text_link", offset=6, length=5, url="https://w.org"),
                ],
                user_ids=[61],
            ),
            metadata=stack.metadata,
        )
        photo = await stub.SendMessage(
            pb.SendMessageRequest(
                message="*Look* here\\!",
                parse_mode=pb.PARSE_MODE_MARKDOWN_V2,
                media_type=pb.MEDIA_TYPE_PHOTO,
                media_url=PHOTO,
                reply_markup=pb.InlineKeyboardMarkup(
                    rows=[
                        pb.InlineKeyboardRow(
                            buttons=[pb.InlineKeyboardButton(text="Go", callback_data="go")]
                        )
                    ]
                ),
                user_ids=[62],
            ),
            metadata=stack.metadata,
        )
        got = await stub.GetBroadcast(
            pb.GetBroadcastRequest(broadcast_id=photo.broadcast_id), metadata=stack.metadata
        )
    assert got.broadcast.parse_mode == pb.PARSE_MODE_MARKDOWN_V2
    assert_watch_complete(await watch(stack, sent.broadcast_id), {61})
    assert_watch_complete(await watch(stack, photo.broadcast_id), {62})
    by_chat = stack.simulator.messages_by_chat(BOT_ID)
    assert by_chat[61][0]["entities"] == [
        {"type": "bold", "offset": 0, "length": 5},
        {"type": "text_link", "offset": 6, "length": 5, "url": "https://w.org"},
    ]
    shown = by_chat[62][0]
    assert (shown["caption"], shown["caption_entities"]) == (
        "Look here!",
        [{"type": "bold", "offset": 0, "length": 4}],
    )
    assert shown["reply_markup"] == {"inline_keyboard": [[{"text": "Go", "callback_data": "go"}]]}
    for call in stack.simulator.calls:
        assert call.ok
        assert spec_problems(dict(call.params), call.method) == []


async def test_date_time_entities_reach_telegram_over_both_transports(sqlite_stack: Stack) -> None:
    """Bot API 10.1's ``date_time``: explicit over gRPC (a Unix time of 0 is one) and REST,
    and from HTML's ``<tg-time>``; Telegram shows each with its time and format."""
    stack = sqlite_stack
    async with stack.stub() as stub:
        sent = await stub.SendMessage(
            pb.SendMessageRequest(
                message="Since epoch",
                entities=[
                    pb.MessageEntity(
                        type="date_time", offset=0, length=5, unix_time=60, date_time_format="r"
                    ),
                    pb.MessageEntity(type="date_time", offset=6, length=5, unix_time=0),
                ],
                user_ids=[71],
            ),
            metadata=stack.metadata,
        )
        refused = stub.SendMessage(
            pb.SendMessageRequest(
                message="Soon",
                entities=[pb.MessageEntity(type="date_time", offset=0, length=4)],
                user_ids=[72],
            ),
            metadata=stack.metadata,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await refused
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status, body = await post(
        stack,
        "/v1/broadcasts",
        {
            "message": "Meet at noon",
            "entities": [
                {
                    "type": "date_time",
                    "offset": 8,
                    "length": 4,
                    "unix_time": 1796631086,
                    "date_time_format": "wDT",
                }
            ],
            "user_ids": [73],
        },
    )
    assert status == 202, body
    status, html = await post(
        stack,
        "/v1/broadcasts",
        {
            "message": 'Meet <tg-time unix="1796631086" format="t">at noon</tg-time>',
            "parse_mode": "html",
            "user_ids": [74],
        },
    )
    assert status == 202, html
    for broadcast_id, chat in (
        (sent.broadcast_id, 71),
        (body["broadcast_id"], 73),
        (html["broadcast_id"], 74),
    ):
        assert_watch_complete(await watch(stack, broadcast_id), {chat})
    by_chat = stack.simulator.messages_by_chat(BOT_ID)
    assert by_chat[71][0]["entities"] == [
        {"type": "date_time", "offset": 0, "length": 5, "unix_time": 60, "date_time_format": "r"},
        {"type": "date_time", "offset": 6, "length": 5, "unix_time": 0},
    ]
    assert by_chat[73][0]["entities"] == [
        {
            "type": "date_time",
            "offset": 8,
            "length": 4,
            "unix_time": 1796631086,
            "date_time_format": "wDT",
        }
    ]
    assert by_chat[74][0]["entities"] == [
        {
            "type": "date_time",
            "offset": 5,
            "length": 7,
            "unix_time": 1796631086,
            "date_time_format": "t",
        }
    ]
    assert 72 not in by_chat
    for call in stack.simulator.calls:
        assert call.ok, call
        assert spec_problems(dict(call.params), call.method) == []


async def test_multipart_upload_with_formatting_and_keyboard(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    assert (await post(stack, "/v1/users", {"users": [{"id": 121, "first_name": "<Ann>"}]}))[
        0
    ] == 200

    async def send(**fields: str) -> tuple[int, Any]:
        form = aiohttp.FormData()
        for name, value in fields.items():
            form.add_field(name, value)
        form.add_field("media", b"GIF89a fake", filename="hello.gif")
        async with (
            aiohttp.ClientSession() as session,
            session.post(stack.http_url + "/send-message", data=form, headers=stack.auth) as r,
        ):
            return r.status, await r.json(content_type=None)

    status, body = await send(
        message="<b>{first_name|you}</b>, look",
        media_type="animation",
        parse_mode="html",
        personalize="true",
        protect_content="true",
        reply_markup='{"rows": [{"buttons": [{"text": "Like", "callback_data": "like"}]}]}',
        user_ids="[121, 122]",
    )
    assert status == 202, body
    assert_watch_complete(await watch(stack, body["broadcast_id"]), {121, 122})
    captions = {
        chat_id: messages[0]["caption"]
        for chat_id, messages in stack.simulator.messages_by_chat(BOT_ID).items()
    }
    assert captions == {121: "<Ann>, look", 122: "you, look"}
    for call in stack.simulator.calls:
        assert call.ok
        assert call.params["parse_mode"] == "HTML"
        assert call.params["protect_content"] is True
        assert call.params["reply_markup"] == {
            "inline_keyboard": [[{"text": "Like", "callback_data": "like"}]]
        }
    status, bad = await send(message="x", media_type="photo", reply_markup="{rows", user_ids="[1]")
    assert (status, bad["errors"][0]["field"]) == (400, "reply_markup")


async def test_grpc_violation_paths_and_nothing_written(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    async with stack.stub() as stub:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SendMessage(
                pb.SendMessageRequest(
                    message="pick",
                    reply_markup=pb.InlineKeyboardMarkup(
                        rows=[
                            pb.InlineKeyboardRow(
                                buttons=[
                                    pb.InlineKeyboardButton(text="a", callback_data="a"),
                                    pb.InlineKeyboardButton(text="b", url="javascript:alert(1)"),
                                    pb.InlineKeyboardButton(text="c", callback_data="x" * 65),
                                ]
                            )
                        ]
                    ),
                    user_ids=[111],
                ),
                metadata=stack.metadata,
            )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)  # type: ignore[arg-type]
    assert status is not None
    detail = error_details_pb2.BadRequest()
    status.details[0].Unpack(detail)
    assert [v.field for v in detail.field_violations] == [
        "reply_markup.rows[0].buttons[1].url",
        "reply_markup.rows[0].buttons[2].callback_data",
    ]
    assert (await get(stack, "/v1/broadcasts/1"))[0] == 404
    assert stack.simulator.calls == ()


async def test_simulator_refuses_like_telegram(sqlite_stack: Stack) -> None:
    """Content the service would never send, straight to the simulator: Telegram's texts."""
    stack = sqlite_stack
    cases = [
        (
            "sendMessage",
            {"chat_id": 1, "text": "<b>x", "parse_mode": "HTML"},
            "Bad Request: can't parse entities: "
            'Can\'t find end tag corresponding to start tag "b"',
        ),
        (
            "sendMessage",
            {"chat_id": 1, "text": "a.b", "parse_mode": "MarkdownV2"},
            "Bad Request: can't parse entities: "
            "Character '.' is reserved and must be escaped with the preceding '\\'",
        ),
        (
            "sendMessage",
            {"chat_id": 1, "text": "x", "reply_markup": {"inline_keyboard": [[{"text": "t"}]]}},
            "Bad Request: can't parse inline keyboard button: "
            "Text buttons are unallowed in the inline keyboard",
        ),
        (
            "sendMessage",
            {
                "chat_id": 1,
                "text": "x",
                "reply_markup": {"inline_keyboard": [[{"text": "t", "callback_data": "d" * 65}]]},
            },
            "Bad Request: BUTTON_DATA_INVALID",
        ),
        (
            "forwardMessage",
            {"chat_id": 1, "from_chat_id": 2, "message_id": 3},
            "Bad Request: message to forward not found",
        ),
    ]
    async with aiohttp.ClientSession() as session:
        for method, params, description in cases:
            async with session.post(
                f"{stack.simulator.api_url}/bot{BOT_TOKEN}/{method}", json=params
            ) as response:
                answer = await response.json()
            assert (response.status, answer["description"]) == (400, description)
    assert len(stack.simulator.messages_by_chat()) == 0
    assert parse("a\\.b", "MarkdownV2").text == "a.b"
