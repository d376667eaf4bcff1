"""The body of the sender's Bot API requests: aiogram's form, without aiohttp's ``FormData``
when nothing is uploaded.

aiogram's session puts a method's fields into an aiohttp ``FormData``, which makes a multipart
writer (a random boundary from ``uuid4``) for every request, then finds no file among the
fields and encodes them as an ``application/x-www-form-urlencoded`` form: 3-4 % of a busy
worker's CPU for the writer it never uses (docs/profiles.md). :func:`request_body` prepares the
fields as aiogram does (its ``model_dump`` of the method, its session's ``prepare_value`` of
each: the bot's defaults, JSON of nested objects, files set aside) and, without a file, encodes
them straight to the bytes ``FormData`` would have sent; with a file it is ``FormData``'s
multipart, as aiogram builds it.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import urlencode

from aiogram import Bot
from aiogram.client.session.base import BaseSession
from aiogram.methods.base import TelegramMethod
from aiogram.types import InputFile
from aiohttp import FormData
from aiohttp.payload import BytesPayload, Payload

FORM: Final = "application/x-www-form-urlencoded"


def request_body(session: BaseSession, bot: Bot, method: TelegramMethod[Any]) -> Payload:
    """``method``'s request body, field for field what aiogram's ``build_form_data`` makes."""
    files: dict[str, InputFile] = {}
    fields: list[tuple[str, str]] = []
    for key, value in method.model_dump(warnings=False).items():
        prepared = session.prepare_value(value, bot=bot, files=files)
        if prepared:  # aiogram leaves out what prepares to nothing (None, "")
            fields.append((key, prepared))
    if not files:
        return BytesPayload(urlencode(fields).encode(), content_type=FORM)
    form = FormData(fields, quote_fields=False)
    for key, file in files.items():
        form.add_field(key, file.read(bot), filename=file.filename or key)
    return form()
