"""Content refused at request time, every violation at once, each with its precise field
path; and the content Telegram can take that is accepted."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from tests.fixtures.content import PHOTO, album, keyboard, ok_button
from tgbroadcast.core.domain.content import (
    Entity,
    InlineButton,
    LinkPreview,
    MessageRef,
)
from tgbroadcast.core.domain.errors import InvalidArgument
from tgbroadcast.core.rules.rich_content import AlbumItemInput
from tgbroadcast.core.rules.validation import SendRequest, validate_send


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
        "date_time without its time",
        {"message": "noon", "entities": [Entity(type="date_time", offset=0, length=4)]},
        "entities[0].unix_time",
        "a date_time needs unix_time",
    ),
    (
        "date_time before the epoch",
        {
            "message": "noon",
            "entities": [Entity(type="date_time", offset=0, length=4, unix_time=-1)],
        },
        "entities[0].unix_time",
        "must be 0 to 9999999999",
    ),
    (
        "date_time in a format Telegram has not",
        {
            "message": "noon",
            "entities": [
                Entity(type="date_time", offset=0, length=4, unix_time=1, date_time_format="TD")
            ],
        },
        "entities[0].date_time_format",
        "in that order",
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
        "video note the service would fetch from inside",
        {"media_type": "video_note", "media_url": "http://127.0.0.1/round.mp4"},
        "media_url",
        "must not reach an internal network: 127.0.0.1 is loopback",
    ),
    (
        "document the service would fetch from inside",
        {"media_type": "document", "media_url": "http://[::1]/report.DOCX?v=2"},
        "media_url",
        "the service fetches this file itself",
    ),
    (
        "animated sticker the service would fetch from inside",
        {"media_type": "sticker", "media_url": "http://192.168.1.9/hi.tgs"},
        "media_url",
        "must not reach an internal network: 192.168.1.9 is private",
    ),
    (
        "album document the service would fetch from inside",
        {
            "media_type": "album",
            "album": [
                AlbumItemInput(media_type="document", media_url="https://x.example/a.pdf"),
                AlbumItemInput(media_type="document", media_url="http://10.1.2.3/b.txt"),
            ],
        },
        "album[1].media_url",
        "must not reach an internal network: 10.1.2.3 is private",
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
        "a text over 32 KiB as written",
        {
            "message": "".join(f"<a href='https://e.com/{'x' * 300}'>a</a> " for _ in range(110)),
            "parse_mode": "html",
        },
        "message",
        "bytes as written; Telegram takes at most 32768",
    ),
    (
        "a file name without an upload",
        {"media_type": "document", "media_url": PHOTO, "media_filename": "a.pdf"},
        "media_filename",
        "names an uploaded file; none is given",
    ),
    (
        "forward with tracked links",
        {
            "media_type": "forward",
            "source": MessageRef(from_chat_id=-100, message_id=1),
            "track_clicks": True,
        },
        "track_clicks",
        "a forward carries the original's links as they are",
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


@pytest.mark.parametrize("time_format", [None, "", "r", "wDT", "dt", "D", "t"])
def test_a_date_time_entity_telegram_takes_is_accepted(time_format: str | None) -> None:
    """Bot API 10.1's ``date_time`` (as ``<tg-time>`` and ``tg://time`` make it)."""
    entity = Entity(
        type="date_time", offset=6, length=4, unix_time=1_796_631_086, date_time_format=time_format
    )
    new = validate_send(
        SendRequest(message="Meet: noon", entities=[entity], user_ids=[1]), max_user_ids=10
    )
    # An empty format is Telegram's default, as none is.
    assert new.content.options.entities == (replace(entity, date_time_format=time_format or None),)
