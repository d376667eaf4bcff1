"""Rich content: everything a broadcast carries beyond its text and one media file.

Plain frozen values, as the rest of the domain (``tgbroadcast.core.domain.model``): formatting
(``parse_mode`` or explicit ``entities``), an inline keyboard, notification and protection
flags, link preview options, album items, the message copied or forwarded, and whether the
text is personalized. :class:`ContentOptions` is stored as JSON in ``broadcasts.options``
(``NULL`` when every option has its default), and :meth:`ContentOptions.from_json` reads back
exactly what :meth:`ContentOptions.to_json` wrote.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

ALBUM_MIN = 2
ALBUM_MAX = 10
"""Telegram's sendMediaGroup takes 2-10 items."""

MAX_BUTTONS = 100
MAX_BUTTONS_PER_ROW = 8
CALLBACK_DATA_MAX_BYTES = 64


class ParseMode(enum.StrEnum):
    """How Telegram parses formatting in a text or caption."""

    HTML = "html"
    MARKDOWN_V2 = "markdown_v2"

    @property
    def telegram(self) -> str:
        """The Bot API's spelling (``parse_mode=HTML`` / ``MarkdownV2``)."""
        return "HTML" if self is ParseMode.HTML else "MarkdownV2"


class AlbumKind(enum.StrEnum):
    """What an album item is; photos and videos may be mixed, documents and audio not."""

    PHOTO = "photo"
    VIDEO = "video"
    DOCUMENT = "document"
    AUDIO = "audio"


@dataclass(frozen=True, slots=True, kw_only=True)
class Entity:
    """Telegram's MessageEntity; ``offset`` and ``length`` count UTF-16 code units."""

    type: str
    offset: int
    length: int
    url: str | None = None
    language: str | None = None
    custom_emoji_id: str | None = None
    user_id: int | None = None
    unix_time: int | None = None
    """A ``date_time``'s moment (seconds since the epoch)."""
    date_time_format: str | None = None
    """A ``date_time``'s format (``r``, or ``w``, ``d``/``D``, ``t``/``T`` in that order);
    ``None``: Telegram's default."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InlineButton:
    """A button that opens ``url`` or sends ``callback_data`` to the bot (exactly one)."""

    text: str
    url: str | None = None
    callback_data: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class InlineKeyboard:
    """Rows of buttons under a message."""

    rows: tuple[tuple[InlineButton, ...], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkPreview:
    """Telegram's LinkPreviewOptions (text messages only)."""

    is_disabled: bool = False
    url: str | None = None
    prefer_small_media: bool = False
    prefer_large_media: bool = False
    show_above_text: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class AlbumItem:
    """One item of an album: by ``media_url`` (a URL or file_id) or by ``media_upload``, the
    name of uploaded bytes in the queue's media store, sent as ``media_filename``."""

    kind: AlbumKind
    media_url: str | None = None
    media_upload: str | None = None
    media_filename: str | None = None
    caption: str = ""
    has_spoiler: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageRef:
    """A message in a chat the bot can read: the source of a copy or a forward."""

    from_chat_id: int
    message_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ContentOptions:
    """Everything about a broadcast's content beyond its text and single media file.

    ``parse_mode`` and ``entities`` never both appear; ``album`` is set exactly for albums,
    ``source`` exactly for copies and forwards. With ``personalize`` the text (and album
    captions) are templates (see :mod:`tgbroadcast.core.rules.templates`).
    """

    parse_mode: ParseMode | None = None
    entities: tuple[Entity, ...] = ()
    reply_markup: InlineKeyboard | None = None
    disable_notification: bool = False
    protect_content: bool = False
    link_preview: LinkPreview | None = None
    album: tuple[AlbumItem, ...] = ()
    source: MessageRef | None = None
    personalize: bool = False

    def to_json(self) -> str | None:
        """The JSON stored in ``broadcasts.options``; ``None`` when every option is default."""
        if self == ContentOptions():
            return None
        data: dict[str, Any] = {}
        if self.parse_mode is not None:
            data["parse_mode"] = self.parse_mode.value
        if self.entities:
            data["entities"] = [_entity_json(e) for e in self.entities]
        if self.reply_markup is not None:
            data["reply_markup"] = [
                [
                    _drop_none({"text": b.text, "url": b.url, "callback_data": b.callback_data})
                    for b in row
                ]
                for row in self.reply_markup.rows
            ]
        if self.disable_notification:
            data["disable_notification"] = True
        if self.protect_content:
            data["protect_content"] = True
        if self.link_preview is not None:
            preview = self.link_preview
            data["link_preview"] = {
                "is_disabled": preview.is_disabled,
                "url": preview.url,
                "prefer_small_media": preview.prefer_small_media,
                "prefer_large_media": preview.prefer_large_media,
                "show_above_text": preview.show_above_text,
            }
        if self.album:
            data["album"] = [
                {
                    "kind": item.kind.value,
                    "media_url": item.media_url,
                    "media_upload": item.media_upload,
                    "media_filename": item.media_filename,
                    "caption": item.caption,
                    "has_spoiler": item.has_spoiler,
                }
                for item in self.album
            ]
        if self.source is not None:
            data["source"] = {
                "from_chat_id": self.source.from_chat_id,
                "message_id": self.source.message_id,
            }
        if self.personalize:
            data["personalize"] = True
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | None) -> ContentOptions:
        """The options :meth:`to_json` wrote (``None``: the defaults)."""
        if text is None:
            return cls()
        data: dict[str, Any] = json.loads(text)
        mode = data.get("parse_mode")
        markup = data.get("reply_markup")
        preview = data.get("link_preview")
        source = data.get("source")
        return cls(
            parse_mode=None if mode is None else ParseMode(mode),
            entities=tuple(Entity(**e) for e in data.get("entities", ())),
            reply_markup=None
            if markup is None
            else InlineKeyboard(
                rows=tuple(tuple(InlineButton(**b) for b in row) for row in markup)
            ),
            disable_notification=bool(data.get("disable_notification", False)),
            protect_content=bool(data.get("protect_content", False)),
            link_preview=None if preview is None else LinkPreview(**preview),
            album=tuple(
                AlbumItem(
                    kind=AlbumKind(item["kind"]),
                    media_url=item.get("media_url"),
                    media_upload=item.get("media_upload"),
                    media_filename=item.get("media_filename"),
                    caption=item.get("caption", ""),
                    has_spoiler=bool(item.get("has_spoiler", False)),
                )
                for item in data.get("album", ())
            ),
            source=None if source is None else MessageRef(**source),
            personalize=bool(data.get("personalize", False)),
        )


DEFAULT_OPTIONS = ContentOptions()


def album_file_ids(text: str) -> tuple[str, ...] | None:
    """The per-item file_ids of an album stored as one ``file_id`` value (a JSON array);
    ``None`` when ``text`` is not such a value."""
    if not text.startswith("["):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        return None
    return tuple(value)


def encode_album_file_ids(file_ids: tuple[str, ...]) -> str:
    """One ``file_id`` value for an album's items (see :func:`album_file_ids`)."""
    return json.dumps(list(file_ids), separators=(",", ":"))


def _entity_json(entity: Entity) -> dict[str, Any]:
    return _drop_none(
        {
            "type": entity.type,
            "offset": entity.offset,
            "length": entity.length,
            "url": entity.url,
            "language": entity.language,
            "custom_emoji_id": entity.custom_emoji_id,
            "user_id": entity.user_id,
            "unix_time": entity.unix_time,
            "date_time_format": entity.date_time_format,
        }
    )


def _drop_none(data: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if value is not None}


__all__ = [
    "ALBUM_MAX",
    "ALBUM_MIN",
    "CALLBACK_DATA_MAX_BYTES",
    "DEFAULT_OPTIONS",
    "MAX_BUTTONS",
    "MAX_BUTTONS_PER_ROW",
    "AlbumItem",
    "AlbumKind",
    "ContentOptions",
    "Entity",
    "InlineButton",
    "InlineKeyboard",
    "LinkPreview",
    "MessageRef",
    "ParseMode",
    "album_file_ids",
    "encode_album_file_ids",
]
