"""The sender's request bodies are, byte for byte, the forms aiogram's own session builds, and
a send made once for many chats is, for each, the send made for it alone."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.methods import DeleteMessage, SendMediaGroup, SendMessage, SendPhoto
from aiogram.methods.base import TelegramMethod
from aiogram.types import (
    BufferedInputFile,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaPhoto,
    LinkPreviewOptions,
    MessageEntity,
)
from aiohttp import MultipartWriter

from tests.fixtures.telegram import BOT_TOKEN
from tgbroadcast.core.domain.content import (
    ContentOptions,
    Entity,
    InlineButton,
    InlineKeyboard,
    LinkPreview,
    ParseMode,
)
from tgbroadcast.core.domain.model import Content, MediaType
from tgbroadcast.worker.aiogram_content import send_call
from tgbroadcast.worker.telegram_forms import FORM, delete_body, prepare, request_body

KEYBOARD = InlineKeyboardMarkup(
    inline_keyboard=[[InlineKeyboardButton(text="Open ✓", url="https://example.com/a?b=c&d=e")]]
)

WITHOUT_FILES: list[TelegramMethod[Any]] = [
    SendMessage(chat_id=42, text="hello"),
    SendMessage(
        chat_id=-1001234567890,
        text="Grüße & <b>bold</b> + 100% = ✓\nline two",
        entities=[MessageEntity(type="bold", offset=0, length=5)],
        reply_markup=KEYBOARD,
        link_preview_options=LinkPreviewOptions(is_disabled=True),
        disable_notification=True,
        protect_content=False,
        allow_paid_broadcast=True,
    ),
    SendMessage(chat_id=7, text="", parse_mode=None),
    SendPhoto(chat_id=42, photo="AgACAgIAAxkBAAIBfileid", caption="a *caption*"),
    SendMediaGroup(
        chat_id=42,
        media=[
            InputMediaPhoto(media="https://cdn.example.com/1.jpg", caption="one"),
            InputMediaPhoto(media="https://cdn.example.com/2.jpg"),
        ],
    ),
]


@pytest.fixture
async def session() -> AiohttpSession:
    return AiohttpSession()


@pytest.mark.parametrize("defaults", [None, DefaultBotProperties(parse_mode="HTML")])
@pytest.mark.parametrize("method", WITHOUT_FILES, ids=lambda m: type(m).__name__)
async def test_a_form_without_files_is_aiograms_urlencoded_form(
    session: AiohttpSession, method: TelegramMethod[Any], defaults: DefaultBotProperties | None
) -> None:
    bot = Bot(BOT_TOKEN, session=session, default=defaults)
    theirs = session.build_form_data(bot, method)()
    ours = request_body(session, bot, method)
    assert ours.content_type == theirs.content_type == FORM
    assert await ours.as_bytes() == await theirs.as_bytes()
    if defaults is not None and isinstance(method, SendMessage) and method.text == "hello":
        assert b"parse_mode=HTML" in await ours.as_bytes()  # the bot's default was applied


@pytest.mark.parametrize(("chat_id", "message_id"), [(42, 1), (-1001234567890, 2**31 + 7)])
async def test_a_delete_is_aiograms_form(
    session: AiohttpSession, chat_id: int, message_id: int
) -> None:
    bot = Bot(BOT_TOKEN, session=session)
    method = DeleteMessage(chat_id=chat_id, message_id=message_id)
    theirs = session.build_form_data(bot, method)()
    ours = delete_body(chat_id, message_id)
    assert ours.content_type == theirs.content_type == FORM
    assert await ours.as_bytes() == await theirs.as_bytes()


async def test_a_form_with_a_file_is_aiograms_multipart_form(session: AiohttpSession) -> None:
    bot = Bot(BOT_TOKEN, session=session)
    photo = BufferedInputFile(b"\x89PNG bytes", filename="p.png")
    method = SendPhoto(chat_id=42, photo=photo, caption="with a file", reply_markup=KEYBOARD)
    theirs = session.build_form_data(bot, method)()
    ours = request_body(session, bot, method)
    assert isinstance(ours, MultipartWriter)
    assert isinstance(theirs, MultipartWriter)
    assert _parts(await ours.as_bytes(), ours.boundary) == _parts(
        await theirs.as_bytes(), theirs.boundary
    )
    assert b"\x89PNG bytes" in await ours.as_bytes()


def _parts(body: bytes, boundary: str) -> list[bytes]:
    """The multipart body's parts, each file's random ``attach://`` name made one."""
    parts = body.split(b"--" + boundary.encode())
    return [re.sub(rb"attach://[\w-]+|name=\"[\w-]{14}\"", b"<file>", part) for part in parts]


RICH = ContentOptions(
    parse_mode=ParseMode.HTML,
    entities=(Entity(type="text_link", offset=0, length=2, url="https://example.com/x?y=1"),),
    reply_markup=InlineKeyboard(rows=((InlineButton(text="Go ✓", url="https://example.com"),),)),
    disable_notification=True,
    protect_content=True,
    link_preview=LinkPreview(is_disabled=True),
)
CONTENTS = [
    Content(message="hello"),
    Content(message="Grüße & <b>ü</b> 100% + more\nline", options=RICH, allow_paid_broadcast=True),
    *(
        Content(message="a caption &=", media_type=kind, options=RICH)
        for kind in MediaType
        if kind.has_media
    ),
    Content(message="", media_type=MediaType.PHOTO),
]
CHATS = [42, -1001234567890, 9_007_199_254_740_993]


@pytest.mark.parametrize("content", CONTENTS, ids=lambda c: f"{c.media_type}-{len(c.message)}")
async def test_a_send_made_once_is_for_each_chat_the_send_made_for_it(
    session: AiohttpSession, content: Content
) -> None:
    bot = Bot(BOT_TOKEN, session=session, default=DefaultBotProperties(protect_content=False))
    caption = content.message if content.media_type.takes_caption and content.message else None
    prepared = prepare(session, bot, send_call(0, content, "AgACfile-id_1", caption))
    assert prepared is not None
    for chat in CHATS:
        alone = send_call(chat, content, "AgACfile-id_1", caption)
        method, body = prepared.to(chat)
        assert type(method) is type(alone)
        assert method.model_dump() == alone.model_dump()
        assert body.content_type == FORM
        assert await body.as_bytes() == await request_body(session, bot, alone).as_bytes()
    assert prepared.method.model_dump()["chat_id"] == 0  # the copies left it as it was


async def test_a_send_that_uploads_is_not_made_once(session: AiohttpSession) -> None:
    bot = Bot(BOT_TOKEN, session=session)
    upload = BufferedInputFile(b"bytes", filename="p.png")
    content = Content(message="", media_type=MediaType.PHOTO)
    assert prepare(session, bot, send_call(0, content, upload, None)) is None


@pytest.mark.parametrize("kind", [MediaType.ALBUM, MediaType.COPY, MediaType.FORWARD])
def test_only_one_message_sends_are_send_calls(kind: MediaType) -> None:
    with pytest.raises(ValueError, match="not one message"):
        send_call(1, Content(message="x", media_type=kind), "", None)
