"""The sender's request bodies are, byte for byte, the forms aiogram's own session builds."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.methods import SendMediaGroup, SendMessage, SendPhoto
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
from tgbroadcast.worker.telegram_forms import FORM, request_body

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
