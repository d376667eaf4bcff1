"""Telegram's successful answers to the sender's calls, read for what it keeps of them.

A send's answer is a whole ``Message`` (an album's a list of them, a copy's a ``MessageId``);
the sender keeps its message id(s) and the file_id of its media, nothing else. aiogram
parses every answer into its pydantic models first — a model of a hundred fields with the
bot in its context, about 9 % of a busy worker's CPU (docs/profiles.md) — so the sender's
session reads those two fields from the JSON instead (:func:`read_sent`). A recall's and an
edit's answers (a delete's ``true``; an edit's ``Message``, or ``true`` for an inline
message) it keeps nothing of: their success is read as such (:func:`read_done`).

Only a successful answer of the expected shape is read here: ``ok`` true and a ``result``
with integer ``message_id`` s (or a delete's or an edit's ``true``). Anything else (a refusal,
a 429, a malformed answer) is left to aiogram's own check, which raises its exceptions as
before.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, get_args

from aiogram.methods import (
    CopyMessage,
    DeleteMessage,
    DeleteMessages,
    ForwardMessage,
    SendAnimation,
    SendAudio,
    SendDocument,
    SendMediaGroup,
    SendMessage,
    SendPhoto,
    SendSticker,
    SendVideo,
    SendVideoNote,
    SendVoice,
)
from aiogram.methods.base import TelegramMethod

from tgbroadcast.worker.aiogram_content import EditCall


@dataclass(frozen=True, slots=True)
class Sent:
    """One message Telegram made: its id and the file_id of its media (``None``: none)."""

    message_id: int
    file_id: str | None = None


MEDIA_FIELDS: Mapping[type[TelegramMethod[Any]], str | None] = {
    SendMessage: None,
    SendPhoto: "photo",
    SendVideo: "video",
    SendAnimation: "animation",
    SendDocument: "document",
    SendAudio: "audio",
    SendVoice: "voice",
    SendVideoNote: "video_note",
    SendSticker: "sticker",
    ForwardMessage: None,
    CopyMessage: None,
}
"""The methods answered with one message, and the field of it whose file_id is kept (a
photo's: its largest size, the last)."""


DELETES: frozenset[type[TelegramMethod[Any]]] = frozenset({DeleteMessage, DeleteMessages})
"""A recall's calls, answered ``true``."""
EDITS: frozenset[type[TelegramMethod[Any]]] = frozenset(get_args(EditCall))
"""An edit's calls, answered with the edited message (``true`` for an inline message)."""


def read_done(method: TelegramMethod[Any], text: str) -> bool:
    """Whether ``text`` is a success of a recall's or an edit's ``method``: ``ok`` with the
    result ``true`` (an edit's: or a message, with an integer ``message_id``); anything else
    is for aiogram's check to judge."""
    kind = type(method)
    if kind not in DELETES and kind not in EDITS:
        return False
    result = _result(text)
    if result is True:
        return True
    return kind in EDITS and isinstance(result, dict) and type(result.get("message_id")) is int


def is_send(method: TelegramMethod[Any]) -> bool:
    """Whether ``method``'s successful answers are read here (a send of one message or an
    album)."""
    return type(method) in MEDIA_FIELDS or type(method) is SendMediaGroup


def read_sent(method: TelegramMethod[Any], text: str) -> Sent | tuple[Sent, ...] | None:
    """The message (an album: the messages, in order) a successful answer to ``method``
    reports; ``None`` when ``method`` is not a send or the answer is not a success of the
    expected shape (for aiogram's check to judge)."""
    kind = type(method)
    if kind is SendMediaGroup:
        assert isinstance(method, SendMediaGroup)
        result = _result(text)
        if not isinstance(result, list) or len(result) != len(method.media):
            return None
        kinds = [str(getattr(media.type, "value", media.type)) for media in method.media]
        items = [_sent(item, kind) for item, kind in zip(result, kinds, strict=True)]
        if not items or any(item is None for item in items):
            return None
        return tuple(item for item in items if item is not None)
    if kind not in MEDIA_FIELDS:
        return None
    return _sent(_result(text), MEDIA_FIELDS[kind])


def _result(text: str) -> Any:
    try:
        answer = json.loads(text)
    except ValueError:
        return None
    if not isinstance(answer, dict) or answer.get("ok") is not True:
        return None
    return answer.get("result")


def _sent(message: Any, field: str | None) -> Sent | None:
    if not isinstance(message, dict):
        return None
    message_id = message.get("message_id")
    if type(message_id) is not int:
        return None
    return Sent(message_id, None if field is None else _file_id(message.get(field)))


def _file_id(media: Any) -> str | None:
    if isinstance(media, list):  # a photo's sizes, smallest first
        media = media[-1] if media else None
    if not isinstance(media, dict):
        return None
    file_id = media.get("file_id")
    return file_id if isinstance(file_id, str) else None
