"""The body of the sender's Bot API requests: aiogram's form, without aiohttp's ``FormData``
when nothing is uploaded, and made once for all the chats a content goes to.

aiogram's session puts a method's fields into an aiohttp ``FormData``, which makes a multipart
writer (a random boundary from ``uuid4``) for every request, then finds no file among the
fields and encodes them as an ``application/x-www-form-urlencoded`` form: 3-4 % of a busy
worker's CPU for the writer it never uses (docs/profiles.md). :func:`request_body` prepares the
fields as aiogram does (its ``model_dump`` of the method, its session's ``prepare_value`` of
each: the bot's defaults, JSON of nested objects, files set aside) and, without a file, encodes
them straight to the bytes ``FormData`` would have sent; with a file it is ``FormData``'s
multipart, as aiogram builds it.

A broadcast sends one content to many chats, and a send's method and form differ from chat to
chat only in ``chat_id``, the first field of every send method. :func:`prepare` makes them once
(:class:`Prepared`); :meth:`Prepared.to` addresses them to a chat: the method copied with its
``chat_id``, the form that chat's id before the fields encoded once — the same bytes as
:func:`request_body` of the copy. A recall's ``deleteMessage`` has two integer fields:
:func:`delete_body` encodes them straight away.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    fields, files = _fields(session, bot, method)
    if not files:
        return BytesPayload(urlencode(fields).encode(), content_type=FORM)
    form = FormData(fields, quote_fields=False)
    for key, file in files.items():
        form.add_field(key, file.read(bot), filename=file.filename or key)
    return form()


def delete_body(chat_id: int, message_id: int) -> Payload:
    """``deleteMessage``'s request body: the bytes :func:`request_body` makes of it."""
    return BytesPayload(b"chat_id=%d&message_id=%d" % (chat_id, message_id), content_type=FORM)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A send's method and form, made once, for any chat."""

    method: TelegramMethod[Any]
    rest: bytes
    """The form's fields after ``chat_id``, encoded (each after a ``&``)."""

    def to(self, chat_id: int) -> tuple[TelegramMethod[Any], Payload]:
        """The method and its request body, addressed to ``chat_id``."""
        method = self.method.model_copy(update={"chat_id": chat_id})
        return method, BytesPayload(b"chat_id=%d%s" % (chat_id, self.rest), content_type=FORM)


def prepare(session: BaseSession, bot: Bot, method: TelegramMethod[Any]) -> Prepared | None:
    """``method`` (addressed to any chat) made once for sending to many; ``None`` when its form
    is not one to address again: it uploads a file (read as it is sent) or does not start
    with ``chat_id``."""
    fields, files = _fields(session, bot, method)
    if files or not fields or fields[0][0] != "chat_id":
        return None
    rest = urlencode(fields[1:]).encode()
    return Prepared(method, b"&" + rest if rest else b"")


def _fields(
    session: BaseSession, bot: Bot, method: TelegramMethod[Any]
) -> tuple[list[tuple[str, str]], dict[str, InputFile]]:
    """The form's fields as aiogram prepares them, in its order, and the files set aside."""
    files: dict[str, InputFile] = {}
    fields: list[tuple[str, str]] = []
    for key, value in method.model_dump(warnings=False).items():
        prepared = session.prepare_value(value, bot=bot, files=files)
        if prepared:  # aiogram leaves out what prepares to nothing (None, "")
            fields.append((key, prepared))
    return fields, files
