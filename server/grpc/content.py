"""Protobuf ↔ domain for rich content: formatting, keyboards, albums, copied messages and
previews. :func:`send_fields` fills the content part of a
:class:`~tgbroadcast.core.rules.validation.SendRequest` (unchecked: validation checks it)."""

from __future__ import annotations

from tgbroadcast.core.domain.content import (
    Entity,
    InlineButton,
    InlineKeyboard,
    LinkPreview,
    MessageRef,
    ParseMode,
)
from tgbroadcast.core.rules.edits import EditRequest
from tgbroadcast.core.rules.rich_content import AlbumItemInput
from tgbroadcast.core.rules.templates import Preview
from tgbroadcast.core.rules.validation import ContentFields
from tgbroadcast.v1 import broadcast_pb2 as pb

_PARSE_MODE_PREFIX = "PARSE_MODE_"
_MEDIA_PREFIX = "MEDIA_TYPE_"
_PARSE_MODE_TO_PB = {mode: pb.ParseMode.Value(_PARSE_MODE_PREFIX + mode.name) for mode in ParseMode}


def send_fields(message: pb.SendMessageRequest | pb.Variant) -> ContentFields:
    """A request's content fields, or a variant's (whose flags are the request's)."""
    flags = message if isinstance(message, pb.SendMessageRequest) else None
    return ContentFields(
        parse_mode=parse_mode_name(message.parse_mode),
        entities=tuple(_entity(e) for e in message.entities),
        reply_markup=_keyboard(message.reply_markup) if message.HasField("reply_markup") else None,
        disable_notification=flags is not None and flags.disable_notification,
        protect_content=flags is not None and flags.protect_content,
        link_preview_options=_link_preview(message.link_preview_options)
        if message.HasField("link_preview_options")
        else None,
        album=tuple(_album_item(item) for item in message.album),
        source=MessageRef(
            from_chat_id=message.source.from_chat_id, message_id=message.source.message_id
        )
        if message.HasField("source")
        else None,
        personalize=flags is not None and flags.personalize,
    )


def edit_request(message: pb.EditBroadcastRequest) -> EditRequest:
    return EditRequest(
        message=message.message,
        parse_mode=parse_mode_name(message.parse_mode),
        entities=tuple(_entity(e) for e in message.entities),
        reply_markup=_keyboard(message.reply_markup) if message.HasField("reply_markup") else None,
        media_url=message.media_url,
    )


def parse_mode_name(value: int) -> str:
    """The REST spelling of a proto ParseMode (``PARSE_MODE_HTML`` → ``html``); unspecified is
    ``""``; an unknown number gives a name validation refuses."""
    if value == pb.PARSE_MODE_UNSPECIFIED:
        return ""
    try:
        name = pb.ParseMode.Name(value)  # type: ignore[arg-type]
    except ValueError:
        return f"unknown enum value {value}"
    return name.removeprefix(_PARSE_MODE_PREFIX).lower()


def parse_mode(value: ParseMode | None) -> pb.ParseMode.ValueType:
    return pb.PARSE_MODE_UNSPECIFIED if value is None else _PARSE_MODE_TO_PB[value]


def preview(value: Preview) -> pb.PreviewMessageResponse:
    return pb.PreviewMessageResponse(
        text=value.text,
        album_captions=list(value.album_captions),
        parse_mode=parse_mode(value.parse_mode),
        variant=value.variant or "",
    )


def _entity(value: pb.MessageEntity) -> Entity:
    return Entity(
        type=value.type,
        offset=value.offset,
        length=value.length,
        url=value.url or None,
        language=value.language or None,
        custom_emoji_id=value.custom_emoji_id or None,
        user_id=value.user_id or None,
        unix_time=value.unix_time if value.HasField("unix_time") else None,
        date_time_format=value.date_time_format or None,
    )


def _keyboard(value: pb.InlineKeyboardMarkup) -> InlineKeyboard:
    return InlineKeyboard(
        rows=tuple(
            tuple(
                InlineButton(
                    text=button.text,
                    url=button.url if button.WhichOneof("action") == "url" else None,
                    callback_data=button.callback_data
                    if button.WhichOneof("action") == "callback_data"
                    else None,
                )
                for button in row.buttons
            )
            for row in value.rows
        )
    )


def _link_preview(value: pb.LinkPreviewOptions) -> LinkPreview:
    return LinkPreview(
        is_disabled=value.is_disabled,
        url=value.url or None,
        prefer_small_media=value.prefer_small_media,
        prefer_large_media=value.prefer_large_media,
        show_above_text=value.show_above_text,
    )


def _album_item(value: pb.AlbumItem) -> AlbumItemInput:
    media_type = ""
    if value.media_type != pb.MEDIA_TYPE_UNSPECIFIED:
        try:
            name = pb.MediaType.Name(value.media_type)
        except ValueError:
            name = f"unknown enum value {value.media_type}"
        media_type = name.removeprefix(_MEDIA_PREFIX).lower()
    return AlbumItemInput(
        media_type=media_type,
        media_url=value.media_url,
        media_data=value.media_data,
        media_filename=value.media_filename,
        caption=value.caption,
        has_spoiler=value.has_spoiler,
    )
