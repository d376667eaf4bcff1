"""Our rich content as aiogram's types: the one place ``ContentOptions`` and album items become
Bot API parameters (``parse_mode``, ``entities``, ``reply_markup``, ``link_preview_options``,
``InputMedia*``). Options left at their defaults become ``None``, which aiogram leaves out of
the call."""

from __future__ import annotations

from typing import Any

from aiogram.methods import (
    EditMessageCaption,
    EditMessageMedia,
    EditMessageReplyMarkup,
    EditMessageText,
    SendAnimation,
    SendAudio,
    SendDocument,
    SendMessage,
    SendPhoto,
    SendSticker,
    SendVideo,
    SendVideoNote,
    SendVoice,
)
from aiogram.types import (
    BufferedInputFile,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaAnimation,
    InputMediaAudio,
    InputMediaDocument,
    InputMediaLivePhoto,
    InputMediaPhoto,
    InputMediaVideo,
    LinkPreviewOptions,
    MessageEntity,
    User,
)

from tgbroadcast.core.domain.content import AlbumItem, AlbumKind, ContentOptions
from tgbroadcast.core.domain.model import Content, MediaType

EditCall = EditMessageText | EditMessageCaption | EditMessageMedia | EditMessageReplyMarkup

SendCall = (
    SendMessage
    | SendPhoto
    | SendVideo
    | SendAnimation
    | SendDocument
    | SendAudio
    | SendVoice
    | SendVideoNote
    | SendSticker
)
"""The one-message sends: a text, or one media with its caption."""

InputMedia = (
    InputMediaAudio | InputMediaDocument | InputMediaLivePhoto | InputMediaPhoto | InputMediaVideo
)
"""What sendMediaGroup takes (we send no live photos)."""


def flags(options: ContentOptions) -> dict[str, Any]:
    """``disable_notification`` and ``protect_content``, which every send method takes."""
    return {
        "disable_notification": True if options.disable_notification else None,
        "protect_content": True if options.protect_content else None,
    }


def parse_mode(options: ContentOptions) -> str | None:
    return None if options.parse_mode is None else options.parse_mode.telegram


def entities(options: ContentOptions) -> list[MessageEntity] | None:
    if not options.entities:
        return None
    return [
        MessageEntity(
            type=e.type,
            offset=e.offset,
            length=e.length,
            url=e.url,
            language=e.language,
            custom_emoji_id=e.custom_emoji_id,
            unix_time=e.unix_time,
            date_time_format=e.date_time_format,
            user=None if e.user_id is None else User(id=e.user_id, is_bot=False, first_name=""),
        )
        for e in options.entities
    ]


def reply_markup(options: ContentOptions) -> InlineKeyboardMarkup | None:
    if options.reply_markup is None:
        return None
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(text=b.text, url=b.url, callback_data=b.callback_data)
                for b in row
            ]
            for row in options.reply_markup.rows
        ]
    )


def link_preview(options: ContentOptions) -> LinkPreviewOptions | None:
    preview = options.link_preview
    if preview is None:
        return None
    return LinkPreviewOptions(
        is_disabled=preview.is_disabled or None,
        url=preview.url,
        prefer_small_media=preview.prefer_small_media or None,
        prefer_large_media=preview.prefer_large_media or None,
        show_above_text=preview.show_above_text or None,
    )


def input_media(
    item: AlbumItem, media: str | BufferedInputFile, options: ContentOptions
) -> InputMedia:
    """One album item; its caption is formatted by the broadcast's ``parse_mode``."""
    caption = item.caption or None
    mode = parse_mode(options) if caption else None
    spoiler = True if item.has_spoiler else None
    match item.kind:
        case AlbumKind.PHOTO:
            return InputMediaPhoto(
                media=media, caption=caption, parse_mode=mode, has_spoiler=spoiler
            )
        case AlbumKind.VIDEO:
            return InputMediaVideo(
                media=media, caption=caption, parse_mode=mode, has_spoiler=spoiler
            )
        case AlbumKind.DOCUMENT:
            return InputMediaDocument(media=media, caption=caption, parse_mode=mode)
        case AlbumKind.AUDIO:
            return InputMediaAudio(media=media, caption=caption, parse_mode=mode)


_NO_CAPTION = frozenset({MediaType.VIDEO_NOTE, MediaType.STICKER})
_MEDIA_KINDS = {
    MediaType.PHOTO: AlbumKind.PHOTO,
    MediaType.VIDEO: AlbumKind.VIDEO,
    MediaType.DOCUMENT: AlbumKind.DOCUMENT,
    MediaType.AUDIO: AlbumKind.AUDIO,
}


_MEDIA_SENDS: dict[MediaType, tuple[type[SendCall], str]] = {
    MediaType.PHOTO: (SendPhoto, "photo"),
    MediaType.VIDEO: (SendVideo, "video"),
    MediaType.ANIMATION: (SendAnimation, "animation"),
    MediaType.DOCUMENT: (SendDocument, "document"),
    MediaType.AUDIO: (SendAudio, "audio"),
    MediaType.VOICE: (SendVoice, "voice"),
    MediaType.VIDEO_NOTE: (SendVideoNote, "video_note"),
    MediaType.STICKER: (SendSticker, "sticker"),
}
"""Each one-media kind's send method and the field its media goes in."""


def send_call(
    chat_id: int, content: Content, source: str | BufferedInputFile, caption: str | None
) -> SendCall:
    """The one-message send of ``content`` (text or one media) to ``chat_id``: ``source``
    is its media (a URL, a file_id or an upload), ``caption`` its caption (``None``: none,
    or its kind takes none). ``ValueError`` for an album, a copy or a forward."""
    options = content.options
    fields: dict[str, Any] = {
        "chat_id": chat_id,
        "allow_paid_broadcast": True if content.allow_paid_broadcast else None,
        "reply_markup": reply_markup(options),
        **flags(options),
    }
    kind = content.media_type
    if kind is MediaType.TEXT:
        return SendMessage(
            text=content.message,
            parse_mode=parse_mode(options),
            entities=entities(options),
            link_preview_options=link_preview(options),
            **fields,
        )
    if caption is not None:
        fields |= {
            "caption": caption,
            "parse_mode": parse_mode(options),
            "caption_entities": entities(options),
        }
    if kind not in _MEDIA_SENDS:
        raise ValueError(f"a {kind} is not one message")
    method, field = _MEDIA_SENDS[kind]
    fields[field] = source
    return method(**fields)


def edit_method(kind: MediaType, *, media_changed: bool) -> str:
    """The ``editMessage*`` method that gives a sent ``kind`` message new content."""
    if kind is MediaType.TEXT:
        return "editMessageText"
    if kind in _NO_CAPTION:
        return "editMessageReplyMarkup"
    return "editMessageMedia" if media_changed else "editMessageCaption"


def edit_call(
    method: str, chat_id: int, message_id: int, content: Content, *, media_changed: bool
) -> EditCall:
    """The :func:`edit_method` call that makes message ``message_id`` carry ``content``
    (an album's caption is its first item's; an album takes no keyboard)."""
    options = content.options
    keyboard = None if content.media_type is MediaType.ALBUM else reply_markup(options)
    caption = content.message
    if content.media_type is MediaType.ALBUM and options.album:
        caption = options.album[0].caption
    ids: dict[str, Any] = {"chat_id": chat_id, "message_id": message_id}
    if method == "editMessageText":
        return EditMessageText(
            **ids,
            text=content.message,
            parse_mode=parse_mode(options),
            entities=entities(options),
            link_preview_options=link_preview(options),
            reply_markup=keyboard,
        )
    if method == "editMessageReplyMarkup":
        return EditMessageReplyMarkup(**ids, reply_markup=keyboard)
    formatted: dict[str, Any] = {
        "caption": caption or None,
        "parse_mode": parse_mode(options) if caption else None,
        "caption_entities": entities(options) if caption else None,
    }
    if method == "editMessageCaption" or not media_changed:
        return EditMessageCaption(**ids, **formatted, reply_markup=keyboard)
    media = _input_media(content, formatted)
    return EditMessageMedia(**ids, media=media, reply_markup=keyboard)


def _input_media(content: Content, formatted: dict[str, Any]) -> InputMedia | InputMediaAnimation:
    """The new media of a single media message, with its caption."""
    source = content.media_url or ""
    if content.media_type is MediaType.ANIMATION:
        return InputMediaAnimation(media=source, **formatted)
    kind = _MEDIA_KINDS.get(content.media_type)
    if kind is None:
        raise ValueError(f"the media of a {content.media_type} message cannot be replaced")
    item = AlbumItem(kind=kind, media_url=source)
    media = input_media(item, source, options=ContentOptions())
    return media.model_copy(update=formatted)
