"""Telegram's rules for rich content, checked when a broadcast is requested.

The request-time half of :mod:`tgbroadcast.core.domain.content`: every rule Telegram would enforce
at the first send — lengths after entities parsing, malformed HTML/MarkdownV2, entities out of
bounds, keyboard limits, album grouping, what a forward may not carry, unknown template fields — is
reported here with the field's path (``album[3].caption``,
``reply_markup.rows[0].buttons[2].callback_data``), so a broadcast never fails recipient by
recipient for a mistake the service could see. Called by :mod:`tgbroadcast.core.rules.validation`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from tgbroadcast.core.domain.content import (
    ALBUM_MAX,
    ALBUM_MIN,
    CALLBACK_DATA_MAX_BYTES,
    MAX_BUTTONS,
    MAX_BUTTONS_PER_ROW,
    AlbumItem,
    AlbumKind,
    ContentOptions,
    Entity,
    InlineKeyboard,
    LinkPreview,
    MessageRef,
    ParseMode,
)
from tgbroadcast.core.domain.errors import FieldViolation
from tgbroadcast.core.domain.model import CAPTION_LIMIT, TEXT_LIMIT, MediaType
from tgbroadcast.core.rules import addresses
from tgbroadcast.core.rules.formatting import FormattingError, parse, utf16_length
from tgbroadcast.core.rules.parsed_text import DATE_TIME_FORMAT
from tgbroadcast.core.rules.templates import TemplateError, parse_template

if TYPE_CHECKING:
    from tgbroadcast.core.rules.validation import SendRequest

ENTITY_TYPES: Final = frozenset(
    {
        "mention",
        "hashtag",
        "cashtag",
        "bot_command",
        "url",
        "email",
        "phone_number",
        "bold",
        "italic",
        "underline",
        "strikethrough",
        "spoiler",
        "blockquote",
        "expandable_blockquote",
        "code",
        "pre",
        "text_link",
        "text_mention",
        "custom_emoji",
        "date_time",
    }
)
_MAX_UNIX_TIME: Final = 9_999_999_999
"""Telegram reads a date_time's Unix time as at most ten digits."""
_PARSE_MODES: Final = ", ".join(m.value for m in ParseMode)
_ALBUM_KINDS: Final = ", ".join(k.value for k in AlbumKind)
PHOTO_UPLOAD_LIMIT: Final = 10 * 1024 * 1024
UPLOAD_LIMIT: Final = 50 * 1024 * 1024
_MAX_FILENAME: Final = 255


def upload_limit(kind: str) -> int:
    """Telegram's limit in bytes on a file a bot uploads (multipart) as a ``kind`` message or
    album item: photos 10 MB, every other kind 50 MB."""
    return PHOTO_UPLOAD_LIMIT if kind == "photo" else UPLOAD_LIMIT


@dataclass(frozen=True, slots=True, kw_only=True)
class AlbumItemInput:
    """One album item as it came in: ``media_type`` is the REST spelling (``"photo"``)."""

    media_type: str = ""
    media_url: str = ""
    media_data: bytes = b""
    media_filename: str = ""
    caption: str = ""
    has_spoiler: bool = False


def parse_mode(value: str, violations: list[FieldViolation]) -> ParseMode | None:
    """``""`` is plain text; an unknown name is a violation."""
    if not value:
        return None
    try:
        return ParseMode(value)
    except ValueError:
        violations.append(
            FieldViolation("parse_mode", f"unknown parse mode {value!r}; one of {_PARSE_MODES}")
        )
        return None


RAW_TEXT_BYTES: Final = 1 << 15
"""Bytes of a text or caption as written (UTF-8, markup and links included) that the Bot API
server takes: a short visible text of many long links can be over it."""


def check_text(
    field: str,
    text: str,
    *,
    mode: ParseMode | None,
    limit: int,
    personalize: bool,
    required: bool,
    violations: list[FieldViolation],
) -> None:
    """A text or caption: at most :data:`RAW_TEXT_BYTES` as written, a valid template (with
    ``personalize``), well-formed markup for ``mode``, and at most ``limit`` characters as
    Telegram counts them after parsing (with ``personalize``: without the recipients'
    values, which are checked per recipient)."""
    written = len(text.encode())
    if written > RAW_TEXT_BYTES:  # the Bot API server's first check: "text is too long"
        violations.append(
            FieldViolation(
                field,
                f"is {written} bytes as written; Telegram takes at most {RAW_TEXT_BYTES} "
                "(UTF-8, markup included) before it counts the characters",
            )
        )
        return
    rendered = text
    has_fields = False
    if personalize:
        try:
            template = parse_template(text)
        except TemplateError as exc:
            violations.append(FieldViolation(field, f"personalization: {exc}"))
            return
        has_fields = bool(template.fields)
        rendered = template.render({}, mode)
    try:
        parsed = parse(rendered, None if mode is None else mode.telegram)
    except FormattingError as exc:
        violations.append(FieldViolation(field, f"can't parse entities: {exc}"))
        return
    if required and not has_fields and not parsed.text.strip():
        violations.append(FieldViolation(field, "must not be empty for a text message"))
    elif parsed.length > limit:
        after = " after formatting" if mode is not None else ""
        if has_fields:
            after += " without the personalized values"
        kind = "Telegram allows" if limit == TEXT_LIMIT else "a caption may have"
        violations.append(
            FieldViolation(field, f"is {parsed.length} characters{after}; {kind} at most {limit}")
        )


def options(
    request: SendRequest, media_type: MediaType, violations: list[FieldViolation]
) -> ContentOptions:
    """Everything but the text and single media: formatting, keyboard, flags, preview."""
    mode = parse_mode(request.parse_mode, violations)
    entities = _entities(request, media_type, mode, violations)
    keyboard = _keyboard(request.reply_markup, media_type, violations)
    preview = _link_preview(request.link_preview_options, media_type, violations)
    if request.album and media_type is not MediaType.ALBUM:
        violations.append(FieldViolation("album", "is only for media_type album"))
    if request.source is not None and media_type not in (MediaType.COPY, MediaType.FORWARD):
        violations.append(FieldViolation("source", "is only for media_type copy or forward"))
    if mode is not None and media_type in (MediaType.VIDEO_NOTE, MediaType.STICKER):
        violations.append(
            FieldViolation("parse_mode", f"{media_type.value} has no text or caption to format")
        )
    if media_type is MediaType.FORWARD:
        if mode is not None:
            violations.append(
                FieldViolation("parse_mode", "a forward keeps the original's formatting")
            )
        if request.allow_paid_broadcast:
            violations.append(
                FieldViolation(
                    "allow_paid_broadcast",
                    "forwardMessage does not take paid broadcasts; use media_type copy",
                )
            )
    return ContentOptions(
        parse_mode=mode,
        entities=entities,
        reply_markup=keyboard,
        disable_notification=request.disable_notification,
        protect_content=request.protect_content,
        link_preview=preview,
        personalize=request.personalize,
    )


def album(
    items: Sequence[AlbumItemInput],
    *,
    mode: ParseMode | None,
    personalize: bool,
    violations: list[FieldViolation],
    allow_private_urls: bool = False,
) -> tuple[AlbumItem, ...]:
    """2-10 items; photos and videos mix, documents and audio only with their own kind. An
    item the service fetches itself (:func:`fetched_by_service`) may not name an internal
    address unless ``allow_private_urls``."""
    if not ALBUM_MIN <= len(items) <= ALBUM_MAX:
        violations.append(
            FieldViolation(
                "album", f"has {len(items)} items; an album has {ALBUM_MIN} to {ALBUM_MAX}"
            )
        )
        if len(items) > ALBUM_MAX * 10:
            return ()
    checked: list[AlbumItem] = []
    for index, item in enumerate(items):
        where = f"album[{index}]"
        kind: AlbumKind | None = None
        try:
            kind = AlbumKind(item.media_type)
        except ValueError:
            violations.append(
                FieldViolation(
                    f"{where}.media_type",
                    f"must be one of {_ALBUM_KINDS}, not {item.media_type or 'empty'!r}",
                )
            )
        url = item.media_url.strip()
        for name, value in (
            ("media_url", url),
            ("media_filename", item.media_filename),
            ("caption", item.caption),
        ):
            if _unencodable(value):
                violations.append(FieldViolation(f"{where}.{name}", _UNENCODABLE))
        if url and item.media_data:
            violations.append(
                FieldViolation(f"{where}.media_url", "give either media_url or media_data")
            )
        elif item.media_data:
            limit = upload_limit(kind) if kind else 0
            if kind and len(item.media_data) > limit:
                violations.append(
                    FieldViolation(
                        f"{where}.media_data",
                        f"is {len(item.media_data)} bytes; Telegram accepts a {kind.value} "
                        f"upload of at most {limit} bytes",
                    )
                )
        elif not url:
            violations.append(
                FieldViolation(f"{where}.media_url", "is required (or upload media_data)")
            )
        elif not is_media_reference(url):
            violations.append(
                FieldViolation(f"{where}.media_url", "must be an http(s) URL or a Telegram file_id")
            )
        elif (
            kind is not None
            and not allow_private_urls
            and fetched_by_service(kind.value, url)
            and (refused := fetch_refusal(url))
        ):
            violations.append(FieldViolation(f"{where}.media_url", refused))
        filename = item.media_filename.replace("\\", "/").rsplit("/", 1)[-1].strip()
        if len(filename) > _MAX_FILENAME:
            violations.append(
                FieldViolation(
                    f"{where}.media_filename", f"is longer than {_MAX_FILENAME} characters"
                )
            )
        if item.has_spoiler and kind in (AlbumKind.DOCUMENT, AlbumKind.AUDIO):
            violations.append(
                FieldViolation(f"{where}.has_spoiler", "only photos and videos take a spoiler")
            )
        if not _unencodable(item.caption):
            check_text(
                f"{where}.caption",
                item.caption,
                mode=mode,
                limit=CAPTION_LIMIT,
                personalize=personalize,
                required=False,
                violations=violations,
            )
        if kind is not None:
            checked.append(
                AlbumItem(
                    kind=kind,
                    media_url=url or None,
                    media_filename=(filename or f"{kind.value}.bin") if item.media_data else None,
                    caption=item.caption,
                    has_spoiler=item.has_spoiler,
                )
            )
    kinds = [item.kind for item in checked]
    for lonely in (AlbumKind.DOCUMENT, AlbumKind.AUDIO):
        if lonely in kinds and any(kind is not lonely for kind in kinds):
            other = next(i for i, kind in enumerate(kinds) if kind is not lonely)
            violations.append(
                FieldViolation(
                    f"album[{other}].media_type",
                    f"an album with a {lonely.value} may hold only {lonely.value} items "
                    "(photos and videos mix with each other only)",
                )
            )
            break
    return tuple(checked)


def source(
    value: MessageRef | None, media_type: MediaType, violations: list[FieldViolation]
) -> MessageRef | None:
    if value is None or (value.from_chat_id == 0 and value.message_id == 0):
        violations.append(
            FieldViolation("source", f"is required for media_type {media_type.value}")
        )
        return None
    if value.from_chat_id == 0 or not -(2**63) <= value.from_chat_id < 2**63:
        violations.append(FieldViolation("source.from_chat_id", "must be a Telegram chat id"))
    if not 0 < value.message_id < 2**31:
        violations.append(FieldViolation("source.message_id", "must be a Telegram message id"))
    return value


_DOCUMENT_URL_TYPES: Final = frozenset({"gif", "pdf", "zip"})
_STICKER_URL_TYPES: Final = frozenset({"webp"})


def fetched_by_service(kind: str, url: str) -> bool:
    """Whether the service fetches ``url`` and uploads the file itself, because Telegram would
    not fetch it as a ``kind`` file: video notes are never sent by URL; sendDocument fetches
    only GIF, PDF and ZIP files, sendSticker only .WEBP stickers — judged by the URL path's
    extension, so a URL without one is left to Telegram. A file_id is never fetched."""
    if not url.lower().startswith(("http://", "https://")):
        return False
    if kind == MediaType.VIDEO_NOTE.value:
        return True
    extension = _extension(url)
    if extension is None:
        return False
    if kind == MediaType.DOCUMENT.value:
        return extension not in _DOCUMENT_URL_TYPES
    if kind == MediaType.STICKER.value:
        return extension not in _STICKER_URL_TYPES
    return False


def base_filename(given: str, media_type: MediaType) -> str:
    """The base name of ``given`` (no folders), or a name from the media type."""
    name = given.replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name or f"{media_type.value}.bin"


def fetch_refusal(url: str) -> str:
    """Why the service may not fetch ``url`` (a host spelled as an internal address); empty
    when it may (a name is checked when the file is fetched)."""
    refused = addresses.host_refusal(urlsplit(url).hostname or "", allow_private=False)
    if not refused:
        return ""
    return (
        f"the service fetches this file itself (Telegram does not fetch it by URL) and must "
        f"not reach an internal network: {refused} (allowed only with {addresses.SETTING})"
    )


def _extension(url: str) -> str | None:
    """The lower-case extension of the URL path's last segment (``None`` without one)."""
    try:
        name = urlsplit(url).path.rsplit("/", 1)[-1]
    except ValueError:
        return None
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem or not 1 <= len(extension) <= 5 or not extension.isalnum():
        return None
    return extension.lower()


def is_media_reference(value: str) -> bool:
    """An http(s) URL with a host, or something shaped like a Telegram file_id."""
    if "://" in value:
        parts = urlsplit(value)
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    return len(value) >= 16 and all(ch.isascii() and (ch.isalnum() or ch in "_-") for ch in value)


def _entities(
    request: SendRequest,
    media_type: MediaType,
    mode: ParseMode | None,
    violations: list[FieldViolation],
) -> tuple[Entity, ...]:
    entities = tuple(request.entities)
    if not entities:
        return ()
    if mode is not None:
        violations.append(FieldViolation("entities", "give either parse_mode or entities"))
        return ()
    if request.personalize:
        violations.append(
            FieldViolation(
                "entities",
                "cannot be combined with personalize (the values would move the offsets); "
                "use parse_mode",
            )
        )
        return ()
    if media_type in (MediaType.ALBUM, MediaType.FORWARD) or not (
        media_type is MediaType.TEXT or media_type.takes_caption
    ):
        violations.append(
            FieldViolation("entities", f"format message; media_type {media_type.value} has none")
        )
        return ()
    size = utf16_length(request.message)
    for index, entity in enumerate(entities):
        where = f"entities[{index}]"
        if entity.type not in ENTITY_TYPES:
            violations.append(
                FieldViolation(f"{where}.type", f"unknown entity type {entity.type!r}")
            )
        if entity.offset < 0:
            violations.append(FieldViolation(f"{where}.offset", "must not be negative"))
        if entity.length < 1:
            violations.append(FieldViolation(f"{where}.length", "must be positive"))
        elif entity.offset >= 0 and entity.offset + entity.length > size:
            violations.append(
                FieldViolation(
                    f"{where}.length",
                    f"ends at {entity.offset + entity.length}, past the end of message "
                    f"({size} UTF-16 code units)",
                )
            )
        if entity.type == "text_link" and not _is_link(entity.url or ""):
            violations.append(
                FieldViolation(f"{where}.url", "a text_link needs an http(s) or tg:// url")
            )
        if entity.type == "text_mention" and not entity.user_id:
            violations.append(FieldViolation(f"{where}.user_id", "a text_mention needs user_id"))
        if entity.type == "custom_emoji" and not entity.custom_emoji_id:
            violations.append(
                FieldViolation(f"{where}.custom_emoji_id", "a custom_emoji needs custom_emoji_id")
            )
        if entity.type == "date_time":
            _check_date_time(entity, where, violations)
        if len(violations) >= 50:
            break
    # An empty format is Telegram's default, as none is: one request, one form, one hash.
    return tuple(
        replace(e, date_time_format=None) if e.date_time_format == "" else e for e in entities
    )


def _check_date_time(entity: Entity, where: str, violations: list[FieldViolation]) -> None:
    if entity.unix_time is None:
        violations.append(FieldViolation(f"{where}.unix_time", "a date_time needs unix_time"))
    elif not 0 <= entity.unix_time <= _MAX_UNIX_TIME:
        violations.append(
            FieldViolation(f"{where}.unix_time", f"must be 0 to {_MAX_UNIX_TIME} (Unix time)")
        )
    if entity.date_time_format is not None and not DATE_TIME_FORMAT.fullmatch(
        entity.date_time_format
    ):
        violations.append(
            FieldViolation(
                f"{where}.date_time_format",
                "must be r, or w, d or D, t or T in that order (each optional), e.g. wDT",
            )
        )


def _keyboard(
    value: InlineKeyboard | None, media_type: MediaType, violations: list[FieldViolation]
) -> InlineKeyboard | None:
    if value is None:
        return None
    if media_type in (MediaType.ALBUM, MediaType.FORWARD):
        method = "sendMediaGroup" if media_type is MediaType.ALBUM else "forwardMessage"
        violations.append(
            FieldViolation("reply_markup", f"{method} takes no keyboard ({media_type.value})")
        )
        return None
    if not value.rows:
        violations.append(FieldViolation("reply_markup.rows", "must have at least one row"))
        return None
    total = sum(len(row) for row in value.rows)
    if total > MAX_BUTTONS:
        violations.append(
            FieldViolation(
                "reply_markup", f"has {total} buttons; Telegram allows at most {MAX_BUTTONS}"
            )
        )
        return None
    for r, row in enumerate(value.rows):
        where = f"reply_markup.rows[{r}]"
        if not row:
            violations.append(FieldViolation(f"{where}.buttons", "must have at least one button"))
        elif len(row) > MAX_BUTTONS_PER_ROW:
            violations.append(
                FieldViolation(
                    f"{where}.buttons",
                    f"has {len(row)} buttons; at most {MAX_BUTTONS_PER_ROW} per row",
                )
            )
        for b, button in enumerate(row):
            path = f"{where}.buttons[{b}]"
            if not button.text.strip() or _unencodable(button.text):
                violations.append(FieldViolation(f"{path}.text", "must not be empty"))
            if button.url is not None and button.callback_data is not None:
                violations.append(FieldViolation(path, "give either url or callback_data"))
            elif button.url is not None:
                if not _is_link(button.url):
                    violations.append(
                        FieldViolation(f"{path}.url", "must be an http(s):// or tg:// URL")
                    )
            elif button.callback_data is not None:
                size = len(button.callback_data.encode("utf-8", errors="replace"))
                if not 1 <= size <= CALLBACK_DATA_MAX_BYTES or _unencodable(button.callback_data):
                    violations.append(
                        FieldViolation(
                            f"{path}.callback_data",
                            f"is {size} bytes; Telegram takes 1 to {CALLBACK_DATA_MAX_BYTES}",
                        )
                    )
            else:
                violations.append(FieldViolation(path, "needs a url or callback_data"))
    return value


def _link_preview(
    value: LinkPreview | None, media_type: MediaType, violations: list[FieldViolation]
) -> LinkPreview | None:
    if value is None:
        return None
    if media_type is not MediaType.TEXT:
        violations.append(FieldViolation("link_preview_options", "is only for text messages"))
        return None
    if value.url and not _is_link(value.url, schemes=("http", "https")):
        violations.append(FieldViolation("link_preview_options.url", "must be an http(s) URL"))
    if value.prefer_small_media and value.prefer_large_media:
        violations.append(
            FieldViolation(
                "link_preview_options.prefer_large_media",
                "give either prefer_small_media or prefer_large_media",
            )
        )
    return value


def _is_link(value: str, schemes: tuple[str, ...] = ("http", "https", "tg")) -> bool:
    parts = urlsplit(value.strip())
    if parts.scheme not in schemes or _unencodable(value):
        return False
    return bool(parts.netloc) if parts.scheme != "tg" else bool(parts.netloc or parts.path)


_UNENCODABLE = "contains a NUL character or an unpaired surrogate"


def _unencodable(text: str) -> bool:
    return "\x00" in text or any("\ud800" <= ch <= "\udfff" for ch in text)


def check_media_url(
    media_url: str,
    media_type: MediaType,
    violations: list[FieldViolation],
    *,
    allow_private_urls: bool,
) -> None:
    """A media message's ``media_url`` when nothing is uploaded: given, a URL or a file_id,
    and (for what the service fetches itself) not an internal address."""
    if not media_url:
        violations.append(
            FieldViolation(
                "media_url",
                f"is required for media_type {media_type.value} (or upload the file)",
            )
        )
    elif not is_media_reference(media_url):
        violations.append(
            FieldViolation("media_url", "must be an http(s) URL or a Telegram file_id")
        )
    elif (
        not allow_private_urls
        and fetched_by_service(media_type.value, media_url)
        and (refused := fetch_refusal(media_url))
    ):
        violations.append(FieldViolation("media_url", refused))
