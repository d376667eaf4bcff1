"""Personalization: the template syntax, escaping for each parse mode, per-recipient limits,
and PreviewMessage — pure functions first, then through the whole service to the simulator
(whose tdlib-rules parser must read every name back literally)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.fixtures.rest import post
from tests.fixtures.stack import Stack, open_backend, start_stack
from tests.fixtures.telegram import BOT_ID
from tests.fixtures.watching import assert_watch_complete, watch
from tgbroadcast.core.domain.content import AlbumItem, AlbumKind, ContentOptions, ParseMode
from tgbroadcast.core.domain.errors import InvalidArgument
from tgbroadcast.core.domain.model import Content, MediaType, UserProfile
from tgbroadcast.core.rules.formatting import FormattingError, escape, parse
from tgbroadcast.core.rules.templates import (
    TemplateError,
    parse_template,
    personalized,
    preview,
    profile_values,
    rendered_problem,
)
from tgbroadcast.core.rules.validation import SendRequest, validate_send
from tgbroadcast.simulator import Simulator
from tgbroadcast.v1 import broadcast_pb2 as pb

NASTY_NAMES = [
    "<b>Bob</b> & co",
    "_*[]()~`>#+-=|{}.!\\",
    "a\\*b",
    "&lt;not an entity&gt;",
    "Zoë 🎉 \u202e",
    "</i><script>",
    'Ann "Co" O\'Neil',
]


# ---- the template language ----


def test_placeholders_fallbacks_and_literal_braces() -> None:
    template = parse_template("Hi {first_name|there}, {{literal}} #{id} {username}")
    assert template.fields == {"first_name", "id", "username"}
    assert template.render({"first_name": "Ann", "id": "7"}, None) == "Hi Ann, {literal} #7 "
    assert template.render({"first_name": None, "id": "7"}, None) == "Hi there, {literal} #7 "
    assert template.render({"first_name": "", "id": "7"}, None) == "Hi there, {literal} #7 "


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("Hi {nickname}", "unknown field 'nickname' in the placeholder at character 3"),
        ("Hi {first_name", "the placeholder at character 3 is not closed"),
        ("a } b", "a lone '}' at character 2"),
        ("{}", "unknown field ''"),
    ],
)
def test_malformed_templates_say_where(text: str, error: str) -> None:
    with pytest.raises(TemplateError, match=error.replace("{", r"\{").replace("}", r"\}")):
        parse_template(text)


def test_profile_values_and_full_name() -> None:
    profile = UserProfile(id=5, username="ann", first_name="Ann", last_name="Lee")
    values = profile_values(5, profile)
    assert values["full_name"] == "Ann Lee"
    assert values["id"] == "5"
    only_last = profile_values(6, UserProfile(id=6, last_name="Lee"))
    assert only_last["full_name"] == "Lee"
    assert profile_values(7, None) == {"id": "7"}


@pytest.mark.parametrize("name", NASTY_NAMES)
@pytest.mark.parametrize("mode", [ParseMode.HTML, ParseMode.MARKDOWN_V2])
def test_escaped_values_read_back_literally(name: str, mode: ParseMode) -> None:
    assert parse(escape(name, mode.telegram), mode.telegram).text == name
    template = parse_template("<b>{first_name}</b>" if mode is ParseMode.HTML else "*{first_name}*")
    parsed = parse(template.render({"first_name": name}, mode), mode.telegram)
    assert parsed.text == name
    assert parsed.entities == [{"type": "bold", "offset": 0, "length": parsed.length}]


@pytest.mark.parametrize("name", NASTY_NAMES)
@pytest.mark.parametrize(
    ("mode", "template"),
    [
        (ParseMode.HTML, '<a href="https://x.y/?n={first_name}">{first_name}</a>'),
        (ParseMode.HTML, "<a href='https://x.y/?n={first_name}'>{first_name}</a>"),
        (ParseMode.MARKDOWN_V2, "[{first_name}](https://x.y/?n={first_name})"),
    ],
)
def test_values_in_a_link_url_stay_the_value(name: str, mode: ParseMode, template: str) -> None:
    """A value inside a link's URL (an HTML attribute, a MarkdownV2 link's ``(...)``) ends
    neither the attribute nor the URL: Telegram reads back exactly the value."""
    rendered = parse_template(template).render({"first_name": name}, mode)
    parsed = parse(rendered, mode.telegram)
    assert parsed.text == name
    assert parsed.entities == [
        {"type": "text_link", "offset": 0, "length": parsed.length, "url": "https://x.y/?n=" + name}
    ]


def test_unescaped_values_would_break_the_markup() -> None:
    """The escaping is what keeps these names literal (the assertions above could fail)."""
    assert parse("<b>Bob</b> & co", "HTML").text != "<b>Bob</b> & co"
    with pytest.raises(FormattingError, match="Bold entity"):
        parse("_*[]()", "MarkdownV2")


def test_personalized_content_and_preview() -> None:
    content = Content(
        message="Hello {full_name|friend}",
        options=ContentOptions(personalize=True, parse_mode=ParseMode.HTML),
    )
    ann = UserProfile(id=1, first_name="Ann", last_name="<Lee>")
    assert personalized(content, 1, ann).message == "Hello Ann &lt;Lee&gt;"
    assert personalized(content, 2, None).message == "Hello friend"
    plain = Content(message="Hello {first_name}")
    assert personalized(plain, 1, ann) is plain
    shown = preview(content, 1, ann)
    assert (shown.text, shown.album_captions, shown.parse_mode) == (
        "Hello Ann &lt;Lee&gt;",
        (),
        ParseMode.HTML,
    )


def test_preview_refuses_what_the_worker_would_refuse() -> None:
    """A preview is the recipient's delivery: a text the worker would not send is refused
    with the reason that recipient's delivery would carry, naming PreviewMessage's field."""
    long_text = Content(
        message="x" * 4090 + "{first_name}", options=ContentOptions(personalize=True)
    )
    alexander = UserProfile(id=2, first_name="Alexander")
    with pytest.raises(InvalidArgument) as caught:
        preview(long_text, 2, alexander)
    (violation,) = caught.value.violations
    reason = rendered_problem(personalized(long_text, 2, alexander))
    assert (violation.field, violation.description) == ("message.message", reason)
    assert (
        reason == "personalized text is 4099 characters for this user; Telegram allows at most 4096"
    )
    assert preview(long_text, 1, UserProfile(id=1, first_name="Al")).text.endswith("xAl")
    empty = Content(message="{first_name}", options=ContentOptions(personalize=True))
    with pytest.raises(InvalidArgument, match="personalized text is empty for this user"):
        preview(empty, 3, None)
    album = Content(
        message="",
        media_type=MediaType.ALBUM,
        options=ContentOptions(
            personalize=True,
            album=(
                AlbumItem(kind=AlbumKind.PHOTO, media_url="https://x.y/1.jpg"),
                AlbumItem(
                    kind=AlbumKind.PHOTO, media_url="https://x.y/2.jpg", caption="c" * 1020 + "{id}"
                ),
            ),
        ),
    )
    with pytest.raises(InvalidArgument) as caught:
        preview(album, 123456, None)
    (violation,) = caught.value.violations
    assert violation.field == "message.album[1].caption"
    assert "caption of album item 1 is 1026 characters" in violation.description


def test_rendered_length_is_checked_per_recipient() -> None:
    content = Content(
        message="x" * 4090 + "{first_name}",
        options=ContentOptions(personalize=True),
    )
    assert rendered_problem(personalized(content, 1, UserProfile(id=1, first_name="Al"))) is None
    problem = rendered_problem(personalized(content, 2, UserProfile(id=2, first_name="Alexander")))
    assert problem == (
        "personalized text is 4099 characters for this user; Telegram allows at most 4096"
    )
    caption = Content(
        message="y" * 1020 + "{first_name}",
        media_type=MediaType.PHOTO,
        media_url="https://example.com/a.jpg",
        options=ContentOptions(personalize=True),
    )
    assert "caption is 1026 characters" in str(
        rendered_problem(personalized(caption, 3, UserProfile(id=3, first_name="Robert")))
    )


def test_unknown_fields_are_refused_at_request_time() -> None:
    request = SendRequest(message="Hi {nick}", user_ids=[1], personalize=True, parse_mode="html")
    with pytest.raises(InvalidArgument) as caught:
        validate_send(request, max_user_ids=10)
    (violation,) = caught.value.violations
    assert violation.field == "message"
    assert "unknown field 'nick'" in violation.description
    # Without personalize the braces are plain text.
    validate_send(SendRequest(message="Hi {nick}", user_ids=[1]), max_user_ids=10)


def test_static_part_over_the_limit_is_refused_at_request_time() -> None:
    request = SendRequest(message="z" * 4097 + "{first_name}", user_ids=[1], personalize=True)
    with pytest.raises(InvalidArgument, match="4097 characters without the personalized values"):
        validate_send(request, max_user_ids=10)


# ---- through the service ----


@pytest.fixture
async def sqlite_stack(simulator: Simulator, tmp_path: Path) -> AsyncIterator[Stack]:
    async with (
        open_backend("sqlite", tmp_path) as backend,
        start_stack(backend, simulator) as stack,
    ):
        yield stack


def received(stack: Stack, chat_id: int) -> dict[str, Any]:
    (message,) = stack.simulator.messages_by_chat(BOT_ID)[chat_id]
    return message


@pytest.mark.parametrize(
    ("mode", "template", "shown"),
    [
        ("html", "Hi <b>{first_name|there}</b>!", "Hi {}!"),
        ("markdown_v2", "Hi *{first_name|there}*\\!", "Hi {}!"),
    ],
)
async def test_names_never_break_the_markup(
    sqlite_stack: Stack, mode: str, template: str, shown: str
) -> None:
    stack = sqlite_stack
    names = {900 + i: name for i, name in enumerate(NASTY_NAMES)}
    users: list[dict[str, object]] = [{"id": i, "first_name": n} for i, n in names.items()]
    users.append({"id": 990, "username": "nameless"})
    names |= {990: "there", 991: "there"}  # no first name / unknown user: the fallback
    status, _ = await post(stack, "/v1/users", {"users": users})
    assert status == 200
    recipients = sorted(names)
    status, body = await post(
        stack,
        "/v1/broadcasts",
        {"message": template, "parse_mode": mode, "personalize": True, "user_ids": recipients},
    )
    assert status == 202, body
    results = assert_watch_complete(await watch(stack, body["broadcast_id"]), set(recipients))
    assert {r.outcome for r in results.values()} == {pb.DELIVERY_OUTCOME_SENT}
    for user_id, name in names.items():
        message = received(stack, user_id)
        assert message["text"] == shown.format(name)
        length = len(name.encode("utf-16-le")) // 2
        assert message["entities"] == [{"type": "bold", "offset": 3, "length": length}]
    assert all(
        call.params["parse_mode"] in ("HTML", "MarkdownV2") for call in stack.simulator.calls
    )


async def test_a_name_too_long_fails_only_its_recipient(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    users = [{"id": 31, "first_name": "Al"}, {"id": 32, "first_name": "Maximilian"}]
    assert (await post(stack, "/v1/users", {"users": users}))[0] == 200
    status, body = await post(
        stack,
        "/send-message",
        {"message": "m" * 4090 + "{first_name}", "personalize": True, "user_ids": [31, 32]},
    )
    assert status == 202, body
    results = assert_watch_complete(await watch(stack, body["broadcast_id"]), {31, 32})
    assert results[31].outcome == pb.DELIVERY_OUTCOME_SENT
    assert results[32].outcome == pb.DELIVERY_OUTCOME_BAD_REQUEST
    assert "4100 characters for this user" in results[32].error
    assert [call.chat_id for call in stack.simulator.calls] == [31]


async def test_preview_over_grpc_and_rest(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    users = [{"id": 41, "first_name": "<Ann>", "last_name": "Lee"}]
    assert (await post(stack, "/v1/users", {"users": users}))[0] == 200
    async with stack.stub() as stub:
        shown = await stub.PreviewMessage(
            pb.PreviewMessageRequest(
                message=pb.SendMessageRequest(
                    message="Hi <i>{full_name}</i>",
                    parse_mode=pb.PARSE_MODE_HTML,
                    personalize=True,
                    user_ids=[1, 2],  # ignored
                ),
                user_id=41,
            ),
            metadata=stack.metadata,
        )
        assert (shown.text, shown.parse_mode) == ("Hi <i>&lt;Ann&gt; Lee</i>", pb.PARSE_MODE_HTML)
        album = await stub.PreviewMessage(
            pb.PreviewMessageRequest(
                message=pb.SendMessageRequest(
                    media_type=pb.MEDIA_TYPE_ALBUM,
                    personalize=True,
                    album=[
                        pb.AlbumItem(
                            media_type=pb.MEDIA_TYPE_PHOTO,
                            media_url="https://example.com/1.jpg",
                            caption="for {first_name}",
                        ),
                        pb.AlbumItem(
                            media_type=pb.MEDIA_TYPE_VIDEO, media_url="https://example.com/2.mp4"
                        ),
                    ],
                ),
                user_id=41,
            ),
            metadata=stack.metadata,
        )
        assert list(album.album_captions) == ["for <Ann>", ""]
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.PreviewMessage(
                pb.PreviewMessageRequest(message=pb.SendMessageRequest(message="x"), user_id=42),
                metadata=stack.metadata,
            )
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            await stub.PreviewMessage(
                pb.PreviewMessageRequest(
                    message=pb.SendMessageRequest(message="{nick}", personalize=True), user_id=41
                ),
                metadata=stack.metadata,
            )
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = rpc_status.from_call(invalid.value)  # type: ignore[arg-type]
        assert status is not None
        detail = error_details_pb2.BadRequest()
        status.details[0].Unpack(detail)
        assert [v.field for v in detail.field_violations] == ["message.message"]

    status, body = await post(
        stack,
        "/v1/preview",
        {
            "message": {
                "message": "Hi *{first_name}*",
                "parse_mode": "markdown_v2",
                "personalize": True,
            },
            "user_id": 41,
        },
    )
    assert (status, body) == (
        200,
        {"text": "Hi *<Ann\\>*", "album_captions": [], "parse_mode": "markdown_v2"},
    )
    # A name that makes the text too long: refused as the worker would refuse the recipient.
    status, body = await post(
        stack,
        "/v1/preview",
        {"message": {"message": "m" * 4090 + "{full_name}", "personalize": True}, "user_id": 41},
    )
    assert (status, body["errors"]) == (
        400,
        [
            {
                "field": "message.message",
                "message": "personalized text is 4099 characters for this user; "
                "Telegram allows at most 4096",
            }
        ],
    )
    status, body = await post(stack, "/v1/preview", {"message": {"message": "x"}, "user_id": 42})
    assert status == 404
    assert body["detail"] == "user 42 not found"
    status, body = await post(
        stack, "/v1/preview", {"message": {"message": "x", "colour": "red"}, "user_id": 41}
    )
    assert status == 400
    assert body["errors"] == [{"field": "message.colour", "message": "is not a known field"}]
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            stack.http_url + "/v1/preview", json={"message": {"message": "x"}, "user_id": 41}
        ) as response,
    ):
        assert response.status == 401
