"""Request validation shared by both transports: one rule, one message, whatever the wire.

Every function either returns a validated domain value or raises
:class:`~broadcasting.errors.InvalidArgument` listing *every* bad field, so a caller fixes a
request in one round trip. Nothing is written before validation passes.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from broadcasting.errors import FieldViolation, InvalidArgument
from broadcasting.model import (
    CAPTION_LIMIT,
    TEXT_LIMIT,
    Content,
    MediaType,
    NewBroadcast,
    UserProfile,
)

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

MAX_USERS_PER_UPSERT = 10_000
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000

UPLOAD_LIMITS = {MediaType.PHOTO: 10 * 1024 * 1024}
"""Telegram's limits for files uploaded by a bot (multipart): photos 10 MB, others 50 MB."""
DEFAULT_UPLOAD_LIMIT = 50 * 1024 * 1024
MAX_FILENAME = 255

_FILE_ID = re.compile(r"^[A-Za-z0-9_-]{16,}$")
_MEDIA_TYPES = ", ".join(t.value for t in MediaType)

# Telegram's limits on user fields (usernames are 5-32 characters; names up to 64).
_USER_FIELD_LIMITS = {"username": 32, "first_name": 64, "last_name": 64, "language_code": 35}


@dataclass(frozen=True, slots=True, kw_only=True)
class SendRequest:
    """A SendMessage request as it came in, before validation.

    ``media_type`` is the REST spelling (``"photo"``; empty means text); the gRPC transport
    converts its enum to it.
    """

    message: str = ""
    media_type: str = ""
    media_url: str = ""
    user_ids: Sequence[int] = ()
    all_users: bool = False
    allow_paid_broadcast: bool = False
    media_data: bytes = b""
    """The media file itself, uploaded through the API instead of ``media_url``."""
    media_filename: str = ""


def unencodable(text: str) -> bool:
    """Whether ``text`` holds what neither Telegram nor every database can store: NUL, or a
    lone UTF-16 surrogate (JSON lets a client send ``"\\ud800"``)."""
    return "\x00" in text or any("\ud800" <= ch <= "\udfff" for ch in text)


_UNENCODABLE = "contains a NUL character or an unpaired surrogate"


def telegram_length(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units (an emoji can count 2)."""
    return len(text.encode("utf-16-le")) // 2


def validate_send(request: SendRequest, *, max_user_ids: int) -> NewBroadcast:
    """Check a SendMessage request against Telegram's rules and ours."""
    violations: list[FieldViolation] = []
    media_type = _media_type(request.media_type, violations)
    content = _content(request, media_type, violations)
    user_ids = _audience(request, max_user_ids, violations)
    if violations:
        raise InvalidArgument(violations)
    assert content is not None
    return NewBroadcast(content=content, user_ids=user_ids, all_users=request.all_users)


def _media_type(value: str, violations: list[FieldViolation]) -> MediaType | None:
    if not value:
        return MediaType.TEXT
    try:
        return MediaType(value)
    except ValueError:
        violations.append(
            FieldViolation("media_type", f"unknown media type {value!r}; one of {_MEDIA_TYPES}")
        )
        return None


def _content(
    request: SendRequest, media_type: MediaType | None, violations: list[FieldViolation]
) -> Content | None:
    message = request.message
    media_url = request.media_url.strip()
    if media_type is None:
        return None
    for field, text in (
        ("message", message),
        ("media_url", media_url),
        ("media_filename", request.media_filename),
    ):
        if unencodable(text):
            violations.append(FieldViolation(field, _UNENCODABLE))
            return None
    length = telegram_length(message)
    if media_type is MediaType.TEXT:
        if media_url:
            violations.append(
                FieldViolation("media_url", "is only for media; set media_type (e.g. photo)")
            )
        if request.media_data:
            violations.append(
                FieldViolation("media_data", "is only for media; set media_type (e.g. photo)")
            )
        if not message.strip():
            violations.append(FieldViolation("message", "must not be empty for a text message"))
        elif length > TEXT_LIMIT:
            violations.append(
                FieldViolation(
                    "message", f"is {length} characters; Telegram allows at most {TEXT_LIMIT}"
                )
            )
        return Content(
            message=message,
            media_type=media_type,
            allow_paid_broadcast=request.allow_paid_broadcast,
        )
    upload = request.media_data
    filename = _filename(request.media_filename, media_type)
    if upload and media_url:
        violations.append(
            FieldViolation("media_url", "give either media_url or an uploaded file, not both")
        )
    elif upload:
        limit = UPLOAD_LIMITS.get(media_type, DEFAULT_UPLOAD_LIMIT)
        if len(upload) > limit:
            violations.append(
                FieldViolation(
                    "media_data",
                    f"is {len(upload)} bytes; Telegram accepts a {media_type.value} upload "
                    f"of at most {limit} bytes",
                )
            )
        if len(filename) > MAX_FILENAME:
            violations.append(
                FieldViolation("media_filename", f"is longer than {MAX_FILENAME} characters")
            )
    elif not media_url:
        violations.append(
            FieldViolation(
                "media_url",
                f"is required for media_type {media_type.value} (or upload the file)",
            )
        )
    elif not _is_media_reference(media_url):
        violations.append(
            FieldViolation("media_url", "must be an http(s) URL or a Telegram file_id")
        )
    if not media_type.takes_caption and message:
        violations.append(
            FieldViolation("message", f"must be empty: {media_type.value} takes no caption")
        )
    elif length > CAPTION_LIMIT:
        violations.append(
            FieldViolation(
                "message",
                f"is {length} characters; a caption may have at most {CAPTION_LIMIT}",
            )
        )
    return Content(
        message=message,
        media_type=media_type,
        media_url=media_url or None,
        media_filename=filename if upload else None,
        allow_paid_broadcast=request.allow_paid_broadcast,
    )


def _filename(given: str, media_type: MediaType) -> str:
    """The base name of ``given`` (no folders), or a name from the media type."""
    name = given.replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name or f"{media_type.value}.bin"


def _is_media_reference(value: str) -> bool:
    if "://" in value:
        parts = urlsplit(value)
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    return bool(_FILE_ID.match(value))


def _audience(
    request: SendRequest, max_user_ids: int, violations: list[FieldViolation]
) -> tuple[int, ...]:
    if request.all_users and request.user_ids:
        violations.append(
            FieldViolation("all_users", "give either user_ids or all_users, not both")
        )
        return ()
    if request.all_users:
        return ()
    if not request.user_ids:
        violations.append(
            FieldViolation(
                "user_ids",
                "name at least one recipient, or set all_users to true to send to every "
                "active user",
            )
        )
        return ()
    distinct = tuple(dict.fromkeys(request.user_ids))
    for index, user_id in enumerate(request.user_ids):
        if user_id == 0 or not INT64_MIN <= user_id <= INT64_MAX:
            violations.append(
                FieldViolation(f"user_ids[{index}]", f"{user_id} is not a Telegram chat id")
            )
            if len(violations) >= 20:
                break
    if len(distinct) > max_user_ids:
        violations.append(
            FieldViolation(
                "user_ids",
                f"names {len(distinct)} distinct recipients; at most {max_user_ids} per request",
            )
        )
    return distinct


def validate_users(users: Sequence[UserProfile]) -> list[UserProfile]:
    """Check an UpsertUsers request: 1..10,000 users, valid ids, no id twice."""
    violations: list[FieldViolation] = []
    if not users:
        violations.append(FieldViolation("users", "must name at least one user"))
    if len(users) > MAX_USERS_PER_UPSERT:
        violations.append(
            FieldViolation(
                "users", f"has {len(users)} users; at most {MAX_USERS_PER_UPSERT} per call"
            )
        )
        raise InvalidArgument(violations)
    first_index: dict[int, int] = {}
    for index, user in enumerate(users):
        if user.id == 0 or not INT64_MIN <= user.id <= INT64_MAX:
            violations.append(FieldViolation(f"users[{index}].id", "must be a Telegram user id"))
        elif user.id in first_index:
            violations.append(
                FieldViolation(
                    f"users[{index}].id",
                    f"{user.id} is given twice (also users[{first_index[user.id]}])",
                )
            )
        else:
            first_index[user.id] = index
        for name, limit in _USER_FIELD_LIMITS.items():
            value = getattr(user, name)
            if value is not None and unencodable(value):
                violations.append(FieldViolation(f"users[{index}].{name}", _UNENCODABLE))
            elif value is not None and len(value) > limit:
                violations.append(
                    FieldViolation(f"users[{index}].{name}", f"is longer than {limit} characters")
                )
        if len(violations) >= 50:
            break
    if violations:
        raise InvalidArgument(violations)
    return list(users)


def validate_page(page_size: int, page_token: str) -> tuple[int, int | None]:
    """``(limit, after_id)`` from a page request; 0 means the default size."""
    violations: list[FieldViolation] = []
    if page_size < 0 or page_size > MAX_PAGE_SIZE:
        violations.append(FieldViolation("page_size", f"must be between 1 and {MAX_PAGE_SIZE}"))
    after: int | None = None
    if page_token:
        try:
            after = decode_page_token(page_token)
        except ValueError:
            violations.append(FieldViolation("page_token", "is not a token this service issued"))
    if violations:
        raise InvalidArgument(violations)
    return page_size or DEFAULT_PAGE_SIZE, after


def encode_page_token(after_id: int) -> str:
    return base64.urlsafe_b64encode(f"u:{after_id}".encode()).decode().rstrip("=")


def decode_page_token(token: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError(token) from None
    kind, _, value = raw.partition(":")
    if kind != "u":
        raise ValueError(token)
    after = int(value)
    if not INT64_MIN <= after <= INT64_MAX:
        raise ValueError(token)
    return after
