"""The REST (JSON) shape of rich content, shared by ``POST /send-message`` and
``POST /v1/preview``: field names are the proto's, enums lower-case (``"html"``,
``"markdown_v2"``, ``"photo"``), album ``media_data`` base64 as in the proto's JSON mapping.
``parse_mode`` also takes Telegram's own spellings, in any case (``"HTML"``, ``"MarkdownV2"``,
``"markdownv2"``): see :func:`parse_mode_name`.

:class:`ContentBody` holds the fields; :func:`send_fields` turns them into the content part of
a :class:`~tgbroadcast.core.rules.validation.SendRequest`, unchecked (validation checks them).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Final

from pydantic import BaseModel, ConfigDict

from tgbroadcast.core.domain.content import (
    Entity,
    InlineButton,
    InlineKeyboard,
    LinkPreview,
    MessageRef,
)
from tgbroadcast.core.domain.errors import FieldViolation, InvalidArgument
from tgbroadcast.core.domain.model import UserFilter
from tgbroadcast.core.rules.edits import EditRequest
from tgbroadcast.core.rules.rich_content import AlbumItemInput
from tgbroadcast.core.rules.validation import ContentFields, SendRequest
from tgbroadcast.core.rules.variants import VariantInput

PARSE_MODE_ALIASES: Final = {
    "HTML": "html",
    "MarkdownV2": "markdown_v2",
    "markdownv2": "markdown_v2",
}
"""Telegram's spellings of the parse modes, accepted besides ours (``html``, ``markdown_v2``);
matching ignores case, so ``Html`` and ``MARKDOWNV2`` are accepted too."""
_PARSE_MODES_FOLDED: Final = {
    **{alias.casefold(): name for alias, name in PARSE_MODE_ALIASES.items()},
    **{name: name for name in PARSE_MODE_ALIASES.values()},
}


def parse_mode_name(value: str) -> str:
    """Our spelling of a ``parse_mode`` (``"MarkdownV2"`` → ``"markdown_v2"``); a value that
    is no spelling of a mode is returned as given, for validation to refuse by name."""
    return _PARSE_MODES_FOLDED.get(value.strip().casefold(), value)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class EntityBody(_Strict):
    type: str
    offset: int
    length: int
    url: str | None = None
    language: str | None = None
    custom_emoji_id: str | None = None
    user_id: int | None = None
    unix_time: int | None = None
    date_time_format: str | None = None


class ButtonBody(_Strict):
    text: str
    url: str | None = None
    callback_data: str | None = None


class RowBody(_Strict):
    buttons: list[ButtonBody]


class KeyboardBody(_Strict):
    rows: list[RowBody]


class LinkPreviewBody(_Strict):
    is_disabled: bool = False
    url: str | None = None
    prefer_small_media: bool = False
    prefer_large_media: bool = False
    show_above_text: bool = False


class AlbumItemBody(_Strict):
    media_type: str | None = None
    media_url: str | None = None
    media_data: str | None = None
    """The file, base64-encoded."""
    media_filename: str | None = None
    caption: str | None = None
    has_spoiler: bool = False


class SourceBody(_Strict):
    from_chat_id: int
    message_id: int


class RichBody(_Strict):
    """The rich-content fields a SendMessage body and each of its variants have."""

    parse_mode: str | None = None
    entities: list[EntityBody] | None = None
    reply_markup: KeyboardBody | None = None
    link_preview_options: LinkPreviewBody | None = None
    album: list[AlbumItemBody] | None = None
    source: SourceBody | None = None


class ContentBody(RichBody):
    """The rich-content fields of a SendMessage body."""

    disable_notification: bool = False
    protect_content: bool = False
    personalize: bool = False


class VariantBody(RichBody):
    """One of ``variants``: a name, a weight, language codes and a full content."""

    name: str
    weight: int = 0
    language_codes: list[str] = []
    message: str | None = None
    media_type: str | None = None
    media_url: str | None = None
    media_data: str | None = None
    """The file, base64-encoded."""
    media_filename: str | None = None


def variant_inputs(bodies: list[VariantBody] | None) -> tuple[VariantInput, ...]:
    """The variants of a SendRequest; ``InvalidArgument`` for ``media_data`` that is not
    base64 (named ``variants[i].…``)."""
    variants: list[VariantInput] = []
    bad: list[FieldViolation] = []
    for index, body in enumerate(bodies or ()):
        where = f"variants[{index}]"
        data = b""
        try:
            if body.media_data:
                data = _base64(body.media_data, "media_data")
            fields = send_fields(body)
        except InvalidArgument as exc:
            bad.extend(FieldViolation(f"{where}.{v.field}", v.description) for v in exc.violations)
            continue
        content = SendRequest(
            message=body.message or "",
            media_type=body.media_type or "",
            media_url=body.media_url or "",
            media_data=data,
            media_filename=body.media_filename or "",
            **fields,
        )
        variants.append(
            VariantInput(
                name=body.name,
                weight=body.weight,
                language_codes=tuple(body.language_codes),
                content=content,
            )
        )
    if bad:
        raise InvalidArgument(bad)
    return tuple(variants)


def _base64(text: str, field: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument.single(field, "is not base64") from None


def send_fields(body: RichBody) -> ContentFields:
    """The content fields of a SendRequest (a variant's flags are false: they are the
    request's); ``InvalidArgument`` for album ``media_data`` that is not base64."""
    album: list[AlbumItemInput] = []
    bad: list[FieldViolation] = []
    for index, item in enumerate(body.album or ()):
        data = b""
        if item.media_data:
            try:
                data = _base64(item.media_data, f"album[{index}].media_data")
            except InvalidArgument as exc:
                bad.extend(exc.violations)
        album.append(
            AlbumItemInput(
                media_type=item.media_type or "",
                media_url=item.media_url or "",
                media_data=data,
                media_filename=item.media_filename or "",
                caption=item.caption or "",
                has_spoiler=item.has_spoiler,
            )
        )
    if bad:
        raise InvalidArgument(bad)
    markup = body.reply_markup
    preview = body.link_preview_options
    flags = body if isinstance(body, ContentBody) else ContentBody()
    return ContentFields(
        parse_mode=parse_mode_name(body.parse_mode or ""),
        entities=tuple(Entity(**e.model_dump()) for e in body.entities or ()),
        reply_markup=None
        if markup is None
        else InlineKeyboard(
            rows=tuple(
                tuple(InlineButton(**b.model_dump()) for b in row.buttons) for row in markup.rows
            )
        ),
        disable_notification=flags.disable_notification,
        protect_content=flags.protect_content,
        link_preview_options=None if preview is None else LinkPreview(**preview.model_dump()),
        album=tuple(album),
        source=None if body.source is None else MessageRef(**body.source.model_dump()),
        personalize=flags.personalize,
    )


class UserFilterBody(_Strict):
    tags: list[str] = []
    language_codes: list[str] = []

    def value(self) -> UserFilter:
        return UserFilter(tags=tuple(self.tags), language_codes=tuple(self.language_codes))


class SendMessageBody(ContentBody):
    """``POST /send-message`` and ``POST /v1/broadcasts``: the content and the audience."""

    message: str | None = None
    media_type: str | None = None
    media_url: str | None = None
    user_ids: list[int] | None = None
    all_users: bool = False
    filter: UserFilterBody | None = None
    allow_paid_broadcast: bool = False
    max_stars: int | None = None
    callback_url: str | None = None
    send_at: str | None = None
    idempotency_key: str | None = None
    bot: str | None = None
    """The bot that sends it; absent: the token's only bot, else ``default``."""
    variants: list[VariantBody] | None = None
    track_clicks: bool = False


class EditBody(_Strict):
    """``POST /v1/broadcasts/{id}/edit``: the new text or caption, its formatting, keyboard
    (absent: removed) and media (absent: kept)."""

    message: str | None = None
    parse_mode: str | None = None
    entities: list[EntityBody] | None = None
    reply_markup: KeyboardBody | None = None
    media_url: str | None = None

    def value(self) -> EditRequest:
        fields = send_fields(
            ContentBody(
                parse_mode=self.parse_mode, entities=self.entities, reply_markup=self.reply_markup
            )
        )
        return EditRequest(
            message=self.message or "",
            parse_mode=fields["parse_mode"],
            entities=fields["entities"],
            reply_markup=fields["reply_markup"],
            media_url=self.media_url or "",
        )


class PreviewBody(_Strict):
    """``POST /v1/preview``: the message is checked as a SendMessage body by the route."""

    message: dict[str, Any] | None = None
    user_id: int
    broadcast_id: int = 0
    variant: str = ""
