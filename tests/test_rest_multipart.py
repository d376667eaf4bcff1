"""multipart/form-data carries every field of the JSON body, named the same in its errors;
the parse mode takes Telegram's spellings in both."""

from __future__ import annotations

import json

import aiohttp

from tests.fixtures.environ import AUTH
from tests.fixtures.refusals import MAX_BODY, assert_nothing_written
from tests.fixtures.rest import get, post, post_form
from tests.fixtures.stack import Stack
from tests.fixtures.watching import assert_watch_complete, watch


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
