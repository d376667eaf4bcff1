"""Every kind of content: request-time validation with precise field paths, and each kind
reaching the simulated Telegram with spec-valid parameters through server and worker."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.fixtures.stack import Stack, open_backend, start_stack
from tests.fixtures.telegram import BOT_ID, BOT_TOKEN
from tests.test_service import assert_watch_complete, get, post, watch
from tgbroadcast.core.domain.content import (
    ContentOptions,
    Entity,
    InlineButton,
    InlineKeyboard,
    LinkPreview,
    MessageRef,
)
from tgbroadcast.core.domain.errors import InvalidArgument
from tgbroadcast.core.domain.model import Content, MediaType, NewBroadcast, UserProfile
from tgbroadcast.core.rules.formatting import parse
from tgbroadcast.core.rules.rich_content import AlbumItemInput
from tgbroadcast.core.rules.validation import SendRequest, validate_send
from tgbroadcast.core.store import Store
from tgbroadcast.simulator import ChatType, Simulator, default_spec
from tgbroadcast.v1 import broadcast_pb2 as pb

PHOTO = "https://cdn.example.com/a.jpg"
VIDEO = "https://cdn.example.com/b.mp4"


def album(*kinds: str, caption: str = "") -> list[AlbumItemInput]:
    return [
        AlbumItemInput(
            media_type=kind, media_url=f"https://cdn.example.com/{i}.bin", caption=caption
        )
        for i, kind in enumerate(kinds)
    ]


def keyboard(*rows: list[InlineButton]) -> InlineKeyboard:
    return InlineKeyboard(rows=tuple(tuple(row) for row in rows))


def ok_button(n: int = 0) -> InlineButton:
    return InlineButton(text=f"b{n}", callback_data=f"d{n}")


def violations(**fields: Any) -> dict[str, str]:
    """The violations of a SendRequest to one recipient, by field path."""
    request = SendRequest(user_ids=[1], **fields)
    with pytest.raises(InvalidArgument) as caught:
        validate_send(request, max_user_ids=10)
    return {v.field: v.description for v in caught.value.violations}


BAD: list[tuple[str, dict[str, Any], str, str]] = [
    ("unknown parse mode", {"message": "x", "parse_mode": "bbcode"}, "parse_mode", "unknown"),
    (
        "unclosed html",
        {"message": "<b>hi", "parse_mode": "html"},
        "message",
        "can't parse entities: Can't find end tag corresponding to start tag \"b\"",
    ),
    (
        "unsupported tag",
        {"message": "<blink>hi</blink>", "parse_mode": "html"},
        "message",
        'Unsupported start tag "blink" at byte offset 0',
    ),
    (
        "crossed html tags",
        {"message": "<b><i>x</b></i>", "parse_mode": "html"},
        "message",
        'expected "</i>", found "</b>"',
    ),
    (
        "unescaped markdown",
        {"message": "Sale ends 1.12!", "parse_mode": "markdown_v2"},
        "message",
        "Character '.' is reserved",
    ),
    (
        "unclosed markdown",
        {"message": "*bold", "parse_mode": "markdown_v2"},
        "message",
        "Can't find end of Bold entity at byte offset 0",
    ),
    (
        "visible text too long",
        {"message": "<b>" + "a" * 4097 + "</b>", "parse_mode": "html"},
        "message",
        "is 4097 characters after formatting",
    ),
    (
        "markup only",
        {"message": "<b></b>", "parse_mode": "html"},
        "message",
        "must not be empty",
    ),
    (
        "caption too long after parsing",
        {
            "message": "*" + "c" * 1025 + "*",
            "parse_mode": "markdown_v2",
            "media_type": "photo",
            "media_url": PHOTO,
        },
        "message",
        "is 1025 characters after formatting; a caption may have at most 1024",
    ),
    (
        "parse mode and entities",
        {
            "message": "hello",
            "parse_mode": "html",
            "entities": [Entity(type="bold", offset=0, length=5)],
        },
        "entities",
        "either parse_mode or entities",
    ),
    (
        "entity past the end",
        {"message": "hello", "entities": [Entity(type="bold", offset=3, length=3)]},
        "entities[0].length",
        "ends at 6, past the end of message (5 UTF-16 code units)",
    ),
    (
        "unknown entity type",
        {"message": "hello", "entities": [Entity(type="blink", offset=0, length=1)]},
        "entities[0].type",
        "unknown entity type",
    ),
    (
        "text link without url",
        {"message": "hello", "entities": [Entity(type="text_link", offset=0, length=1)]},
        "entities[0].url",
        "needs an http(s) or tg:// url",
    ),
    (
        "album of one",
        {"media_type": "album", "album": album("photo")},
        "album",
        "has 1 items; an album has 2 to 10",
    ),
    (
        "album of eleven",
        {"media_type": "album", "album": album(*["photo"] * 11)},
        "album",
        "has 11 items",
    ),
    (
        "document with a photo",
        {"media_type": "album", "album": album("document", "photo")},
        "album[1].media_type",
        "may hold only document items",
    ),
    (
        "audio with a video",
        {"media_type": "album", "album": album("video", "audio")},
        "album[0].media_type",
        "may hold only audio items",
    ),
    (
        "video note by URL",
        {"media_type": "video_note", "media_url": VIDEO},
        "media_url",
        "video notes cannot be sent by URL; give a file_id or upload the file",
    ),
    (
        "document by URL that is not GIF, PDF or ZIP",
        {"media_type": "document", "media_url": "https://cdn.example.com/report.DOCX?v=2"},
        "media_url",
        "only for GIF, PDF and ZIP files, not .docx",
    ),
    (
        "animated sticker by URL",
        {"media_type": "sticker", "media_url": "https://cdn.example.com/hi.tgs"},
        "media_url",
        "only .WEBP stickers by URL, not .tgs",
    ),
    (
        "album document by URL that is not GIF, PDF or ZIP",
        {
            "media_type": "album",
            "album": [
                AlbumItemInput(media_type="document", media_url="https://x.example/a.pdf"),
                AlbumItemInput(media_type="document", media_url="https://x.example/b.txt"),
            ],
        },
        "album[1].media_url",
        "only for GIF, PDF and ZIP files, not .txt",
    ),
    (
        "album sticker",
        {"media_type": "album", "album": album("photo", "sticker")},
        "album[1].media_type",
        "must be one of photo, video, document, audio",
    ),
    (
        "album caption too long",
        {"media_type": "album", "album": album("photo", "video", caption="k" * 1025)},
        "album[1].caption",
        "is 1025 characters; a caption may have at most 1024",
    ),
    (
        "album caption malformed",
        {
            "media_type": "album",
            "album": album("photo", "photo", caption="<b>"),
            "parse_mode": "html",
        },
        "album[0].caption",
        "can't parse entities",
    ),
    (
        "album item without media",
        {
            "media_type": "album",
            "album": [AlbumItemInput(media_type="photo"), *album("photo")],
        },
        "album[0].media_url",
        "is required",
    ),
    (
        "album item url and upload",
        {
            "media_type": "album",
            "album": [
                AlbumItemInput(media_type="photo", media_url=PHOTO, media_data=b"x"),
                *album("photo"),
            ],
        },
        "album[0].media_url",
        "either media_url or media_data",
    ),
    (
        "album spoiler on a document",
        {
            "media_type": "album",
            "album": [
                AlbumItemInput(media_type="document", media_url=PHOTO, has_spoiler=True),
                *album("document"),
            ],
        },
        "album[0].has_spoiler",
        "only photos and videos",
    ),
    (
        "album with a text",
        {"media_type": "album", "album": album("photo", "photo"), "message": "hi"},
        "message",
        "give items captions",
    ),
    (
        "album with a keyboard",
        {
            "media_type": "album",
            "album": album("photo", "photo"),
            "reply_markup": keyboard([ok_button()]),
        },
        "reply_markup",
        "sendMediaGroup takes no keyboard",
    ),
    (
        "album items elsewhere",
        {"message": "x", "album": album("photo", "photo")},
        "album",
        "only for",
    ),
    ("copy without source", {"media_type": "copy"}, "source", "is required for media_type copy"),
    (
        "formatted sticker",
        {"media_type": "sticker", "media_url": PHOTO, "parse_mode": "html"},
        "parse_mode",
        "sticker has no text or caption to format",
    ),
    (
        "copy of message 0",
        {"media_type": "copy", "source": MessageRef(from_chat_id=-100, message_id=0)},
        "source.message_id",
        "must be a Telegram message id",
    ),
    (
        "copy with a media url",
        {
            "media_type": "copy",
            "source": MessageRef(from_chat_id=-100, message_id=1),
            "media_url": PHOTO,
        },
        "media_url",
        "is not for media_type copy",
    ),
    (
        "forward with a caption",
        {
            "media_type": "forward",
            "source": MessageRef(from_chat_id=-100, message_id=1),
            "message": "x",
        },
        "message",
        "a forward takes no caption; use media_type copy",
    ),
    (
        "forward with a keyboard",
        {
            "media_type": "forward",
            "source": MessageRef(from_chat_id=-100, message_id=1),
            "reply_markup": keyboard([ok_button()]),
        },
        "reply_markup",
        "forwardMessage takes no keyboard",
    ),
    (
        "forward with a parse mode",
        {
            "media_type": "forward",
            "source": MessageRef(from_chat_id=-100, message_id=1),
            "parse_mode": "html",
        },
        "parse_mode",
        "keeps the original's formatting",
    ),
    (
        "paid forward",
        {
            "media_type": "forward",
            "source": MessageRef(from_chat_id=-100, message_id=1),
            "allow_paid_broadcast": True,
        },
        "allow_paid_broadcast",
        "use media_type copy",
    ),
    (
        "source elsewhere",
        {"message": "x", "source": MessageRef(from_chat_id=-1, message_id=1)},
        "source",
        "only for",
    ),
    (
        "callback data too long",
        {
            "message": "x",
            "reply_markup": keyboard(
                [ok_button(0), ok_button(1), InlineButton(text="c", callback_data="é" * 33)]
            ),
        },
        "reply_markup.rows[0].buttons[2].callback_data",
        "is 66 bytes; Telegram takes 1 to 64",
    ),
    (
        "empty callback data",
        {"message": "x", "reply_markup": keyboard([InlineButton(text="c", callback_data="")])},
        "reply_markup.rows[0].buttons[0].callback_data",
        "is 0 bytes",
    ),
    (
        "button without text",
        {
            "message": "x",
            "reply_markup": keyboard([ok_button()], [InlineButton(text=" ", url="https://a.b")]),
        },
        "reply_markup.rows[1].buttons[0].text",
        "must not be empty",
    ),
    (
        "button with nothing to do",
        {"message": "x", "reply_markup": keyboard([InlineButton(text="t")])},
        "reply_markup.rows[0].buttons[0]",
        "needs a url or callback_data",
    ),
    (
        "button with both",
        {
            "message": "x",
            "reply_markup": keyboard(
                [InlineButton(text="t", url="https://a.b", callback_data="d")]
            ),
        },
        "reply_markup.rows[0].buttons[0]",
        "either url or callback_data",
    ),
    (
        "ftp button",
        {"message": "x", "reply_markup": keyboard([InlineButton(text="t", url="ftp://a.b/c")])},
        "reply_markup.rows[0].buttons[0].url",
        "http(s):// or tg://",
    ),
    (
        "nine in a row",
        {"message": "x", "reply_markup": keyboard([ok_button(i) for i in range(9)])},
        "reply_markup.rows[0].buttons",
        "has 9 buttons; at most 8 per row",
    ),
    (
        "101 buttons",
        {"message": "x", "reply_markup": keyboard(*[[ok_button(i)] for i in range(101)])},
        "reply_markup",
        "has 101 buttons; Telegram allows at most 100",
    ),
    (
        "empty row",
        {"message": "x", "reply_markup": keyboard([ok_button()], [])},
        "reply_markup.rows[1].buttons",
        "at least one button",
    ),
    (
        "link preview on a photo",
        {
            "message": "x",
            "media_type": "photo",
            "media_url": PHOTO,
            "link_preview_options": LinkPreview(is_disabled=True),
        },
        "link_preview_options",
        "only for text messages",
    ),
    (
        "link preview small and large",
        {
            "message": "x",
            "link_preview_options": LinkPreview(prefer_small_media=True, prefer_large_media=True),
        },
        "link_preview_options.prefer_large_media",
        "either prefer_small_media or prefer_large_media",
    ),
    (
        "personalize with entities",
        {
            "message": "hi {first_name}",
            "personalize": True,
            "entities": [Entity(type="bold", offset=0, length=2)],
        },
        "entities",
        "cannot be combined with personalize",
    ),
    (
        "personalized caption with unknown field",
        {
            "media_type": "album",
            "personalize": True,
            "album": album("photo", "photo", caption="{age}"),
        },
        "album[0].caption",
        "unknown field 'age'",
    ),
]


@pytest.mark.parametrize(("fields", "path", "text"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_content_names_the_field(fields: dict[str, Any], path: str, text: str) -> None:
    found = violations(**fields)
    assert path in found, found
    assert text in found[path], found[path]


@pytest.mark.parametrize(
    ("media_type", "media_url"),
    [
        ("video_note", "AgACAgIAAxkBAAIBY2ZvideoNoteFileId"),
        ("document", "https://cdn.example.com/a.pdf"),
        ("document", "https://cdn.example.com/archive.zip?token=1"),
        ("document", "https://cdn.example.com/download?id=7"),  # no extension: Telegram decides
        ("document", "AgACAgIAAxkBAAIBY2ZdocumentFileId"),
        ("sticker", "https://cdn.example.com/s.webp"),
        ("sticker", "AgACAgIAAxkBAAIBY2ZstickerFileId"),
        ("photo", "https://cdn.example.com/p.png"),
    ],
)
def test_media_telegram_can_fetch_or_reuse_is_accepted(media_type: str, media_url: str) -> None:
    request = SendRequest(media_type=media_type, media_url=media_url, user_ids=[1])
    new = validate_send(request, max_user_ids=10)
    assert new.content.media_url == media_url


def test_a_video_note_upload_is_accepted() -> None:
    request = SendRequest(media_type="video_note", media_data=b"\x00\x00mp4", user_ids=[1])
    assert validate_send(request, max_user_ids=10).content.media_filename == "video_note.bin"


def test_every_violation_is_reported_at_once() -> None:
    found = violations(
        media_type="album",
        parse_mode="html",
        album=[
            AlbumItemInput(media_type="photo", media_url=PHOTO, caption="<b>"),
            AlbumItemInput(media_type="video", media_url="not a url"),
            AlbumItemInput(media_type="gif", media_url=PHOTO),
            AlbumItemInput(media_type="photo", media_url=PHOTO, caption="x" * 1025),
        ],
    )
    assert set(found) == {
        "album[0].caption",
        "album[1].media_url",
        "album[2].media_type",
        "album[3].caption",
    }


def test_limits_count_the_visible_text() -> None:
    new = validate_send(
        SendRequest(message="<b>" + "a" * 4096 + "</b>", parse_mode="html", user_ids=[1]),
        max_user_ids=10,
    )
    assert new.content.options.parse_mode == "html"
    emoji = "😀" * 2048  # 4096 UTF-16 code units
    validate_send(SendRequest(message=emoji, user_ids=[1]), max_user_ids=10)
    assert "4098 characters" in violations(message=emoji + "😀")["message"]
    validate_send(
        SendRequest(
            message="x",
            reply_markup=keyboard(*[[ok_button(r * 8 + i) for i in range(8)] for r in range(12)]),
            user_ids=[1],
        ),
        max_user_ids=10,
    )


# ---- persisted on every backend ----


async def test_rich_options_survive_the_store(database_url: str) -> None:
    options = ContentOptions(
        parse_mode=None,
        entities=(Entity(type="text_mention", offset=0, length=2, user_id=42),),
        reply_markup=keyboard([InlineButton(text="Ünïcode", url="tg://resolve?domain=x")]),
        disable_notification=True,
        protect_content=True,
        link_preview=LinkPreview(url="https://example.com", show_above_text=True),
    )
    new = validate_send(
        SendRequest(
            message="hi there",
            entities=options.entities,
            reply_markup=options.reply_markup,
            disable_notification=True,
            protect_content=True,
            link_preview_options=options.link_preview,
            user_ids=[5],
        ),
        max_user_ids=10,
    )
    copy = validate_send(
        SendRequest(
            media_type="copy",
            message="<i>new</i>",
            parse_mode="html",
            source=MessageRef(from_chat_id=-1001234567890, message_id=77),
            user_ids=[5],
            personalize=True,
        ),
        max_user_ids=10,
    )
    albums = validate_send(
        SendRequest(
            media_type="album",
            album=[
                AlbumItemInput(
                    media_type="photo", media_url=PHOTO, caption="one", has_spoiler=True
                ),
                AlbumItemInput(media_type="video", media_data=b"v", media_filename="v.mp4"),
            ],
            user_ids=[5],
        ),
        max_user_ids=10,
    )
    async with Store.open(database_url) as store:
        await store.migrate()
        for created in (new, copy, albums):
            stored = await store.create_broadcast(created)
            assert (await store.get_broadcast(stored.id)).content == created.content
        plain = await store.create_broadcast(
            NewBroadcast(content=Content(message="p"), user_ids=(5,))
        )
        assert (await store.get_broadcast(plain.id)).content.options == ContentOptions()
    assert new.content.options == options
    assert copy.content.media_type is MediaType.COPY


async def test_profiles_are_read_in_one_call(database_url: str) -> None:
    async with Store.open(database_url) as store:
        await store.migrate()
        await store.upsert_users(
            [
                UserProfile(id=1, first_name="Ann", last_name="Lee", username="ann"),
                UserProfile(id=-100200, first_name="Group"),
                UserProfile(id=3, language_code="de"),
            ]
        )
        found = await store.profiles([3, 1, 999, -100200, 1])
        assert set(found) == {1, 3, -100200}
        assert (found[1].first_name, found[1].last_name, found[1].username) == ("Ann", "Lee", "ann")
        assert found[3].first_name is None
        assert found[3].language_code == "de"
        assert await store.profiles([]) == {}
        many = await store.profiles(list(range(-600, 600)))
        assert set(many) == {1, 3}


# ---- through the service ----


@pytest.fixture
async def sqlite_stack(simulator: Simulator, tmp_path: Path) -> AsyncIterator[Stack]:
    async with (
        open_backend("sqlite", tmp_path) as backend,
        start_stack(backend, simulator) as stack,
    ):
        yield stack


def spec_problems(call_params: dict[str, Any], method: str) -> list[str]:
    """Where the parameters of a recorded call break the Bot API spec."""
    spec = default_spec()
    described = spec.method(method)
    assert described is not None
    found: list[str] = []
    known = {f.name: f for f in described.fields}
    for name, value in call_params.items():
        field = known.get(name)
        if field is None:
            found.append(f"{name}: not a parameter of {method}")
            continue
        if isinstance(value, dict | list):
            options = [spec.problems(t, value, name) for t in field.types]
            if all(options):
                found.extend(options[0])
    return found


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


async def test_album_with_uploads_then_by_file_id(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    recipients = [71, 72, 73]
    async with stack.stub() as stub:
        sent = await stub.SendMessage(
            pb.SendMessageRequest(
                media_type=pb.MEDIA_TYPE_ALBUM,
                parse_mode=pb.PARSE_MODE_HTML,
                album=[
                    pb.AlbumItem(
                        media_type=pb.MEDIA_TYPE_PHOTO,
                        media_data=b"\x89PNG fake photo bytes",
                        media_filename="cat.png",
                        caption="<b>one</b>",
                        has_spoiler=True,
                    ),
                    pb.AlbumItem(media_type=pb.MEDIA_TYPE_VIDEO, media_url=VIDEO, caption="two"),
                    pb.AlbumItem(
                        media_type=pb.MEDIA_TYPE_PHOTO,
                        media_data=b"second upload",
                        media_filename="dog.jpg",
                    ),
                ],
                disable_notification=True,
                user_ids=recipients,
            ),
            metadata=stack.metadata,
        )
    results = assert_watch_complete(await watch(stack, sent.broadcast_id), set(recipients))
    calls = stack.simulator.calls
    assert [c.method for c in calls] == ["sendMediaGroup"] * 3
    assert all(c.ok for c in calls), calls
    first, *later = calls
    assert first.media == "upload"
    assert [c.media for c in later] == ["file_id", "file_id"]
    for call in calls:
        items = call.params["media"]
        assert [i["type"] for i in items] == ["photo", "video", "photo"]
        assert items[0]["caption"] == "<b>one</b>"
        assert items[0]["parse_mode"] == "HTML"
        assert items[0]["has_spoiler"] is True
        assert "caption" not in items[2]
        assert call.params["disable_notification"] is True
        assert spec_problems(dict(call.params), "sendMediaGroup") == []
        # The message id recorded is the album's first message.
        assert results[int(call.params["chat_id"])].message_id == call.result[0]["message_id"]
    received = stack.simulator.messages_by_chat(BOT_ID)[72]
    assert len(received) == 3
    assert received[0]["caption"] == "one"
    assert len({m["media_group_id"] for m in received}) == 1


async def test_album_over_rest_with_base64_upload(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    status, body = await post(
        stack,
        "/send-message",
        {
            "media_type": "album",
            "album": [
                {
                    "media_type": "document",
                    "media_data": base64.b64encode(b"%PDF-1.4").decode(),
                    "media_filename": "a.pdf",
                    "caption": "A",
                },
                {"media_type": "document", "media_url": "https://example.com/b.pdf"},
            ],
            "user_ids": [81],
        },
    )
    assert status == 202, body
    assert_watch_complete(await watch(stack, body["broadcast_id"]), {81})
    (call,) = stack.simulator.calls
    assert call.ok
    assert call.media == "upload"
    assert [m.get("document", {}).get("file_name") for m in call.result] == ["a.pdf", "b.pdf"]
    status, bad = await post(
        stack,
        "/send-message",
        {
            "media_type": "album",
            "album": [
                {"media_type": "photo", "media_url": PHOTO},
                {"media_type": "photo", "media_url": PHOTO},
                {"media_type": "photo", "media_url": PHOTO},
                {"media_type": "photo", "media_url": PHOTO, "caption": "c" * 1025},
            ],
            "user_ids": [81],
        },
    )
    assert status == 400
    assert bad["errors"] == [
        {
            "field": "album[3].caption",
            "message": "is 1025 characters; a caption may have at most 1024",
        }
    ]
    status, bad = await post(
        stack,
        "/send-message",
        {
            "media_type": "album",
            "album": [{"media_type": "photo", "media_data": "!!"}] * 2,
            "user_ids": [1],
        },
    )
    assert (status, bad["errors"][0]["field"]) == (400, "album[0].media_data")


async def test_copy_and_forward_of_a_channel_post(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    channel = -1001234567890
    stack.simulator.chats.declare(channel, chat_type=ChatType.CHANNEL)
    post_id = stack.simulator.post_message(bot_id=BOT_ID, chat_id=channel, text="Channel news")[
        "message_id"
    ]
    status, copied = await post(
        stack,
        "/send-message",
        {
            "media_type": "copy",
            "source": {"from_chat_id": channel, "message_id": post_id},
            "reply_markup": {"rows": [{"buttons": [{"text": "More", "url": "https://t.me/x"}]}]},
            "protect_content": True,
            "allow_paid_broadcast": True,
            "user_ids": [91, 92],
        },
    )
    assert status == 202, copied
    status, forwarded = await post(
        stack,
        "/send-message",
        {
            "media_type": "forward",
            "source": {"from_chat_id": channel, "message_id": post_id},
            "disable_notification": True,
            "user_ids": [93],
        },
    )
    assert status == 202, forwarded
    status, missing = await post(
        stack,
        "/send-message",
        {
            "media_type": "copy",
            "source": {"from_chat_id": channel, "message_id": 999},
            "user_ids": [94],
        },
    )
    assert status == 202
    assert_watch_complete(await watch(stack, copied["broadcast_id"]), {91, 92})
    assert_watch_complete(await watch(stack, forwarded["broadcast_id"]), {93})
    lost = assert_watch_complete(await watch(stack, missing["broadcast_id"]), {94})
    assert lost[94].outcome == pb.DELIVERY_OUTCOME_BAD_REQUEST
    assert lost[94].error == "Bad Request: message to copy not found"

    copies = [c for c in stack.simulator.calls if c.method == "copyMessage" and c.ok]
    assert sorted(int(c.params["chat_id"]) for c in copies) == [91, 92]
    for call in copies:
        assert (call.params["from_chat_id"], call.params["message_id"]) == (channel, post_id)
        assert call.params["reply_markup"] == {
            "inline_keyboard": [[{"text": "More", "url": "https://t.me/x"}]]
        }
        assert call.params["protect_content"] is True
        assert call.params["allow_paid_broadcast"] is True
        assert "caption" not in call.params
        assert spec_problems(dict(call.params), "copyMessage") == []
    (forward,) = [c for c in stack.simulator.calls if c.method == "forwardMessage"]
    assert forward.ok
    assert forward.params["disable_notification"] is True
    assert spec_problems(dict(forward.params), "forwardMessage") == []
    by_chat = stack.simulator.messages_by_chat(BOT_ID)
    assert by_chat[91][0]["text"] == "Channel news"
    assert "forward_origin" not in by_chat[91][0]
    assert by_chat[93][0]["text"] == "Channel news"
    assert by_chat[93][0]["forward_origin"]["message_id"] == post_id


async def test_copy_with_a_new_caption(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    async with stack.stub() as stub:
        photo = await stub.SendMessage(
            pb.SendMessageRequest(media_type=pb.MEDIA_TYPE_PHOTO, media_url=PHOTO, user_ids=[101]),
            metadata=stack.metadata,
        )
        assert_watch_complete(await watch(stack, photo.broadcast_id), {101})
        original = stack.simulator.messages_by_chat(BOT_ID)[101][0]["message_id"]
        copy = await stub.SendMessage(
            pb.SendMessageRequest(
                media_type=pb.MEDIA_TYPE_COPY,
                message="<u>new</u> caption",
                parse_mode=pb.PARSE_MODE_HTML,
                source=pb.MessageRef(from_chat_id=101, message_id=original),
                user_ids=[102],
            ),
            metadata=stack.metadata,
        )
    assert_watch_complete(await watch(stack, copy.broadcast_id), {102})
    call = stack.simulator.calls[-1]
    assert (call.method, call.params["caption"], call.params["parse_mode"]) == (
        "copyMessage",
        "<u>new</u> caption",
        "HTML",
    )
    shown = stack.simulator.messages_by_chat(BOT_ID)[102][0]
    assert shown["caption"] == "new caption"
    assert shown["caption_entities"] == [{"type": "underline", "offset": 0, "length": 3}]
    assert "photo" in shown


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
