"""The Bot API simulator's core, over real HTTP: envelope, routing and tokens, parameters in
every body encoding, Telegram's rejection texts, and the recording of calls.

Messages and media are tested in ``test_simulator_messages``; the behaviour knobs (declared
chats, faults, rate limits, the control API and the command line) in ``test_simulator_knobs``.
"""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import aiohttp
import pytest
from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest

from tests.fixtures.telegram import (
    BOT_ID,
    BOT_SECRET,
    BOT_TOKEN,
    MEDIA_METHODS,
    OTHER_BOT_TOKEN,
    PHOTO_URL,
    call,
    conforms,
    failure,
)
from tests.fixtures.telegram import http as http_fixture  # noqa: F401 -- fixture "http"
from tgbroadcast.simulator import Simulator


async def test_get_me_returns_the_bot_user(
    http: aiohttp.ClientSession, simulator: Simulator, bot: Bot
) -> None:
    status, body = await call(http, simulator, "getMe", verb="GET")
    assert status == 200
    assert body["ok"] is True
    me = body["result"]
    assert me["id"] == BOT_ID
    assert me["is_bot"] is True
    assert conforms("User", me)
    user = await bot.get_me()
    assert (user.id, user.username) == (BOT_ID, me["username"])


async def test_method_names_are_case_insensitive(
    http: aiohttp.ClientSession, simulator: Simulator
) -> None:
    for spelling in ("sendmessage", "SENDMESSAGE", "sendMessage"):
        status, body = await call(http, simulator, spelling, json={"chat_id": 1, "text": "x"})
        assert status == 200, body
    assert [c.method for c in simulator.calls] == ["sendMessage"] * 3


@pytest.mark.parametrize(
    ("path", "status", "description"),
    [
        (f"/bot{BOT_TOKEN}/sendNothing", 404, "Not Found"),
        (f"/bot{BOT_TOKEN}/", 404, "Not Found"),
        (f"/bot{BOT_TOKEN}/getMe/extra", 404, "Not Found"),
        ("/getMe", 404, "Not Found"),
        ("/bot123/getMe", 401, "Unauthorized"),
        ("/botabc:0123456789012345678901234567890123/getMe", 401, "Unauthorized"),
        ("/bot123:short/getMe", 401, "Unauthorized"),
    ],
)
async def test_routing_and_token_errors(
    http: aiohttp.ClientSession, simulator: Simulator, path: str, status: int, description: str
) -> None:
    async with http.post(f"{simulator.api_url}{path}") as response:
        assert response.content_type == "application/json"
        body = await response.json()
        assert failure(response.status, body) == (status, description)


async def test_only_listed_tokens_are_accepted(http: aiohttp.ClientSession) -> None:
    async with Simulator(tokens=[BOT_TOKEN]) as sim:
        assert (await call(http, sim, "getMe"))[0] == 200
        status, body = await call(http, sim, "getMe", token=OTHER_BOT_TOKEN)
        assert failure(status, body) == (401, "Unauthorized")


async def test_known_but_unimplemented_method_says_so(
    http: aiohttp.ClientSession, simulator: Simulator
) -> None:
    status, body = await call(http, simulator, "getUpdates")
    code, description = failure(status, body)
    assert code == 501
    assert "does not implement getUpdates" in description


async def test_parameters_from_the_query_string(
    http: aiohttp.ClientSession, simulator: Simulator
) -> None:
    status, body = await call(
        http, simulator, "sendMessage", verb="GET", params={"chat_id": "42", "text": "hello"}
    )
    assert status == 200
    assert body["result"]["chat"]["id"] == 42
    assert body["result"]["text"] == "hello"


async def test_body_parameters_override_the_query_string(
    http: aiohttp.ClientSession, simulator: Simulator
) -> None:
    status, body = await call(
        http, simulator, "sendMessage", params={"chat_id": "1", "text": "q"}, json={"text": "b"}
    )
    assert status == 200
    assert (body["result"]["chat"]["id"], body["result"]["text"]) == (1, "b")


async def test_urlencoded_body_with_json_serialized_objects(
    http: aiohttp.ClientSession, simulator: Simulator
) -> None:
    markup = {"inline_keyboard": [[{"text": "go", "url": "https://example.com"}]]}
    form = {
        "chat_id": "7",
        "text": "with keyboard",
        "reply_markup": json.dumps(markup),
        "disable_notification": "true",
        "message_thread_id": "12",
        "unknown_parameter": "ignored",
    }
    status, body = await call(http, simulator, "sendMessage", data=form)
    assert status == 200, body
    params = simulator.calls[-1].params
    assert params["reply_markup"] == markup
    assert params["disable_notification"] is True
    assert params["message_thread_id"] == 12
    assert "unknown_parameter" not in params


async def test_json_body_with_native_values(
    http: aiohttp.ClientSession, simulator: Simulator
) -> None:
    payload = {
        "chat_id": -100123,
        "text": "json",
        "protect_content": False,
        "entities": [{"type": "bold", "offset": 0, "length": 4}],
    }
    status, body = await call(http, simulator, "sendMessage", json=payload)
    assert status == 200, body
    assert body["result"]["chat"]["type"] == "group"
    assert simulator.calls[-1].params["entities"] == payload["entities"]
    assert simulator.calls[-1].params["protect_content"] is False


async def test_multipart_upload_as_direct_part_and_by_attach(
    http: aiohttp.ClientSession, simulator: Simulator
) -> None:
    direct = aiohttp.FormData()
    direct.add_field("chat_id", "5")
    direct.add_field("caption", "direct")
    direct.add_field(
        "photo", b"\xff\xd8\xffjpeg-bytes", filename="a.jpg", content_type="image/jpeg"
    )
    status, body = await call(http, simulator, "sendPhoto", data=direct)
    assert status == 200, body
    assert body["result"]["caption"] == "direct"
    assert simulator.calls[-1].media == "upload"
    assert simulator.calls[-1].params["photo"] == {
        "upload": "a.jpg",
        "size": 13,
        "content_type": "image/jpeg",
    }

    attached = aiohttp.FormData()
    attached.add_field("chat_id", "5")
    attached.add_field("document", "attach://file0")
    attached.add_field("file0", b"%PDF-1.4", filename="report.pdf", content_type="application/pdf")
    status, body = await call(http, simulator, "sendDocument", data=attached)
    assert status == 200, body
    document = body["result"]["document"]
    assert (document["file_name"], document["file_size"]) == ("report.pdf", 8)
    assert simulator.calls[-1].media == "upload"


async def test_attach_to_a_missing_part_is_no_file(
    http: aiohttp.ClientSession, simulator: Simulator
) -> None:
    form = aiohttp.FormData()
    form.add_field("chat_id", "5")
    form.add_field("photo", "attach://nothing")
    form.add_field("other", b"x", filename="x.jpg")
    status, body = await call(http, simulator, "sendPhoto", data=form)
    assert failure(status, body) == (400, "Bad Request: there is no photo in the request")


async def test_uploads_over_the_limit_are_refused(http: aiohttp.ClientSession) -> None:
    async with Simulator(upload_limit=1000) as sim:
        form = aiohttp.FormData()
        form.add_field("chat_id", "5")
        form.add_field("document", b"x" * 2000, filename="big.bin")
        status, body = await call(http, sim, "sendDocument", data=form)
        assert failure(status, body) == (413, "Request Entity Too Large")


async def test_photos_uploaded_over_10_mb_are_refused(
    http: aiohttp.ClientSession, simulator: Simulator
) -> None:
    """Telegram takes a photo of at most 10 MB by upload (other files up to the request's
    50 MB): a bigger one is refused as a photo, alone or in an album, and sent as a video."""
    limit = 10 * 1024 * 1024

    def form(method_field: str, size: int) -> aiohttp.FormData:
        data = aiohttp.FormData()
        data.add_field("chat_id", "5")
        data.add_field(method_field, io.BytesIO(b"x" * size), filename="big.jpg")
        return data

    too_big = (400, "Bad Request: PHOTO_SAVE_FILE_INVALID")
    status, body = await call(http, simulator, "sendPhoto", data=form("photo", limit + 1))
    assert failure(status, body) == too_big
    album = json.dumps([{"type": "photo", "media": f"attach://p{i}"} for i in range(2)])
    data = aiohttp.FormData()
    data.add_field("chat_id", "5")
    data.add_field("media", album)
    data.add_field("p0", b"x" * 100, filename="small.jpg")
    data.add_field("p1", io.BytesIO(b"x" * (limit + 1)), filename="big.jpg")
    status, body = await call(http, simulator, "sendMediaGroup", data=data)
    assert failure(status, body) == too_big
    assert simulator.messages_by_chat() == {}  # nothing of the album was sent
    status, body = await call(http, simulator, "sendPhoto", data=form("photo", limit))
    assert status == 200, body
    status, body = await call(http, simulator, "sendVideo", data=form("video", limit + 1))
    assert status == 200, body


@pytest.mark.parametrize(
    ("method", "payload", "description"),
    [
        ("sendMessage", {"text": "x"}, "Bad Request: chat_id is empty"),
        ("sendMessage", {"chat_id": 1}, "Bad Request: message text is empty"),
        ("sendMessage", {"chat_id": 1, "text": "   "}, "Bad Request: message text is empty"),
        ("sendMessage", {}, "Bad Request: message text is empty"),
        ("sendMessage", {"chat_id": "", "text": "x"}, "Bad Request: chat_id is empty"),
        ("sendMessage", {"chat_id": "nobody", "text": "x"}, "Bad Request: chat not found"),
        ("sendMessage", {"chat_id": "@nobody", "text": "x"}, "Bad Request: chat not found"),
        (
            "sendMessage",
            {"chat_id": 1, "text": "x", "message_thread_id": "abc"},
            'Bad Request: field "message_thread_id" must be a valid Number',
        ),
        (
            "sendMessage",
            {"chat_id": 1, "text": "x", "disable_notification": "maybe"},
            'Bad Request: field "disable_notification" must be of type Boolean',
        ),
        (
            "sendMessage",
            {"chat_id": 1, "text": "x", "reply_markup": "{not json"},
            "Bad Request: can't parse reply keyboard markup JSON object",
        ),
        (
            "sendMessage",
            {"chat_id": 1, "text": "x", "entities": "{}"},
            "Bad Request: can't parse entities JSON object",
        ),
        (
            "sendMessage",
            {"chat_id": 1, "text": "x", "link_preview_options": "[1]"},
            "Bad Request: can't parse link preview options JSON object",
        ),
        (
            "sendMessage",
            {"chat_id": 1, "text": "x" * 4097},
            "Bad Request: message is too long",
        ),
        (
            "sendMessage",
            {"chat_id": 1, "text": "x", "parse_mode": "Markdown3"},
            "Bad Request: unsupported parse_mode",
        ),
        (
            "sendPhoto",
            {"chat_id": 1, "photo": PHOTO_URL, "caption": "c" * 1025},
            "Bad Request: message caption is too long",
        ),
        (
            "sendPhoto",
            {"chat_id": 1, "photo": "not-a-file-id"},
            "Bad Request: wrong file identifier/HTTP URL specified",
        ),
        (
            "copyMessage",
            {"chat_id": 1, "from_chat_id": 2},
            'Bad Request: parameter "message_id" is required',
        ),
        (
            "copyMessage",
            {"chat_id": 1, "from_chat_id": 2, "message_id": 99},
            "Bad Request: message to copy not found",
        ),
    ],
)
async def test_rejections_use_telegrams_texts(
    http: aiohttp.ClientSession,
    simulator: Simulator,
    method: str,
    payload: dict[str, Any],
    description: str,
) -> None:
    status, body = await call(http, simulator, method, data={k: str(v) for k, v in payload.items()})
    assert failure(status, body) == (400, description)
    assert simulator.calls[-1].error_code == 400
    assert simulator.messages_by_chat() == {}


@pytest.mark.parametrize(("method", "field"), MEDIA_METHODS)
async def test_media_missing_is_named(
    http: aiohttp.ClientSession, simulator: Simulator, method: str, field: str
) -> None:
    status, body = await call(http, simulator, method, json={"chat_id": 1})
    expected = f"Bad Request: there is no {field.replace('_', ' ')} in the request"
    assert failure(status, body) == (400, expected)


async def test_limits_count_text_after_entities_parsing(
    http: aiohttp.ClientSession, simulator: Simulator
) -> None:
    exact = {"chat_id": 1, "text": "x" * 4096}
    assert (await call(http, simulator, "sendMessage", json=exact))[0] == 200
    marked_up = {"chat_id": 1, "text": f"<b>{'y' * 4096}</b>", "parse_mode": "HTML"}
    status, body = await call(http, simulator, "sendMessage", json=marked_up)
    assert status == 200
    assert body["result"]["text"] == "y" * 4096
    caption = {"chat_id": 1, "photo": PHOTO_URL, "caption": "c" * 1024}
    assert (await call(http, simulator, "sendPhoto", json=caption))[0] == 200


async def test_unparseable_json_body(http: aiohttp.ClientSession, simulator: Simulator) -> None:
    status, body = await call(
        http,
        simulator,
        "sendMessage",
        data=b"{oops",
        headers={"Content-Type": "application/json"},
    )
    assert failure(status, body) == (400, "Bad Request: can't parse JSON object")


async def test_recording_never_holds_the_token(simulator: Simulator, bot: Bot) -> None:
    await bot.send_message(9, "hi")
    with pytest.raises(TelegramBadRequest):
        await bot.send_message(9, "")
    record = json.dumps([c.to_json() for c in simulator.calls])
    assert BOT_SECRET not in record
    first, second = simulator.calls
    assert (first.bot_id, first.method, first.chat_id, first.error_code) == (
        BOT_ID,
        "sendMessage",
        9,
        None,
    )
    assert first.result["text"] == "hi"
    assert second.error_code == 400
    assert [c.seq for c in simulator.calls_to(9)] == [1, 2]
    assert simulator.calls_to(10) == []


async def test_wait_for_wakes_on_calls(simulator: Simulator, bot: Bot) -> None:
    waiter = asyncio.create_task(simulator.wait_for(lambda s: s.call_count >= 2))
    await bot.send_message(1, "a")
    assert not waiter.done()
    await bot.send_message(1, "b")
    await waiter  # woken by the second answer (a test that hangs here fails on its timeout)
