"""Request validation shared by both transports: one rule, one message, whatever the wire.

Every function either returns a validated domain value or raises
:class:`~tgbroadcast.core.domain.errors.InvalidArgument` listing *every* bad field, so a caller
fixes a request in one round trip. Nothing is written before validation passes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TypedDict

from tgbroadcast.core.domain.content import (
    ContentOptions,
    Entity,
    InlineKeyboard,
    LinkPreview,
    MessageRef,
)
from tgbroadcast.core.domain.errors import FieldViolation, InvalidArgument
from tgbroadcast.core.domain.model import (
    CAPTION_LIMIT,
    TEXT_LIMIT,
    Content,
    MediaType,
    NewBroadcast,
    UserFilter,
    UserProfile,
    Variant,
)
from tgbroadcast.core.domain.recipients import INT64_MAX, INT64_MIN, checked_ids
from tgbroadcast.core.rules import callback_urls, paid, rich_content, schedule
from tgbroadcast.core.rules.rich_content import AlbumItemInput
from tgbroadcast.core.rules.variants import CheckContent, VariantInput, validate_variants

MAX_USERS_PER_UPSERT = 10_000

MAX_FILENAME = 255
MAX_IDEMPOTENCY_KEY = 255

_MEDIA_TYPES = ", ".join(t.value for t in MediaType)

# Telegram's limits on user fields (usernames are 5-32 characters; names up to 64).
_USER_FIELD_LIMITS = {"username": 32, "first_name": 64, "last_name": 64, "language_code": 35}


class ContentFields(TypedDict):
    """The content fields of a SendRequest beyond text, media and the paid flag."""

    parse_mode: str
    entities: tuple[Entity, ...]
    reply_markup: InlineKeyboard | None
    disable_notification: bool
    protect_content: bool
    link_preview_options: LinkPreview | None
    album: tuple[AlbumItemInput, ...]
    source: MessageRef | None
    personalize: bool


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
    filter: UserFilter | None = None
    """The audience as a filter (its tags and language codes as given, not yet checked)."""
    allow_paid_broadcast: bool = False
    media_data: bytes = b""
    """The media file itself, uploaded through the API instead of ``media_url``."""
    media_filename: str = ""
    parse_mode: str = ""
    """``"html"``, ``"markdown_v2"`` or empty (the rest of the content part is
    :mod:`tgbroadcast.core.rules.rich_content`)."""
    entities: Sequence[Entity] = ()
    reply_markup: InlineKeyboard | None = None
    disable_notification: bool = False
    protect_content: bool = False
    link_preview_options: LinkPreview | None = None
    album: Sequence[AlbumItemInput] = ()
    source: MessageRef | None = None
    personalize: bool = False
    callback_url: str = ""
    """Where the completion webhook goes (empty: none)."""
    send_at: datetime | None = None
    """Start at this time instead of now (see :mod:`tgbroadcast.core.rules.schedule`)."""
    idempotency_key: str = ""
    """The caller's idempotency key (empty: none)."""
    max_stars: int = 0
    """A paid broadcast's Stars budget (0: none; :mod:`~tgbroadcast.core.rules.paid`)."""
    variants: Sequence[VariantInput] = ()
    """Several contents instead of this one (:mod:`~tgbroadcast.core.rules.variants`)."""
    track_clicks: bool = False
    """Lead the links through the service (:mod:`~tgbroadcast.core.rules.clicks`)."""


def unencodable(text: str) -> bool:
    """Whether ``text`` holds what neither Telegram nor every database can store: NUL, or a
    lone UTF-16 surrogate (JSON lets a client send ``"\\ud800"``)."""
    return "\x00" in text or any("\ud800" <= ch <= "\udfff" for ch in text)


_UNENCODABLE = "contains a NUL character or an unpaired surrogate"


def validate_send(
    request: SendRequest,
    *,
    max_user_ids: int,
    accept_callbacks: bool = True,
    allow_private_callbacks: bool = False,
    track_clicks: bool = True,
) -> NewBroadcast:
    """Check a SendMessage request against Telegram's rules and ours, its start time
    (:mod:`~tgbroadcast.core.rules.schedule`) and idempotency key included.

    ``accept_callbacks`` is false when no webhook secret is configured: a ``callback_url``
    is then refused, since its receiver could not verify anything (``track_clicks``
    likewise without a public address: ``track_clicks`` is then refused). Unless
    ``allow_private_callbacks`` (``webhook.allow_private_networks``), a ``callback_url``
    whose host is an internal address, in any spelling, is refused
    (:mod:`~tgbroadcast.core.rules.addresses`; names are checked at delivery).
    """
    violations: list[FieldViolation] = []
    callback_url = callback_urls.checked(
        request.callback_url, accept_callbacks, violations, allow_private=allow_private_callbacks
    )
    content, variants = _contents(
        request, _content_check(allow_private_urls=allow_private_callbacks), violations
    )
    user_ids, user_filter = _audience(request, max_user_ids, violations)
    _idempotency_key(request.idempotency_key, violations)
    stars = paid.max_stars(request.max_stars, request.allow_paid_broadcast, violations)
    if request.track_clicks and not track_clicks:
        violations.append(FieldViolation("track_clicks", _NO_PUBLIC_URL))
    elif request.track_clicks and content is not None and content.media_type is MediaType.FORWARD:
        violations.append(FieldViolation("track_clicks", _FORWARD_UNTRACKED))
    violations.extend(schedule.send_at_violations(request.send_at))
    if violations:
        raise InvalidArgument(violations)
    assert content is not None
    return NewBroadcast(
        content=content,
        user_ids=user_ids,
        all_users=request.all_users,
        filter=user_filter,
        callback_url=callback_url,
        send_at=schedule.start_time(request.send_at),
        idempotency_key=request.idempotency_key or None,
        max_stars=stars,
        variants=variants,
        track_clicks=request.track_clicks,
    )


_EMPTY_FILTER = (
    "names no tag and no language code, which would be every active user; set all_users to "
    "true for that"
)
_NO_PUBLIC_URL = "needs the service's public address (server.public_url / TGB_SERVER_PUBLIC_URL)"
_FORWARD_UNTRACKED = "a forward carries the original's links as they are: nothing to track"


def _idempotency_key(key: str, violations: list[FieldViolation]) -> None:
    """1 to :data:`MAX_IDEMPOTENCY_KEY` printable ASCII characters (empty: no key)."""
    if key and (len(key) > MAX_IDEMPOTENCY_KEY or not all(" " <= ch <= "~" for ch in key)):
        violations.append(
            FieldViolation(
                "idempotency_key", f"must be 1-{MAX_IDEMPOTENCY_KEY} printable ASCII characters"
            )
        )


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


def _content_check(*, allow_private_urls: bool) -> CheckContent:
    """A request's content checked, violations named by its own fields."""

    def check(request: SendRequest, violations: list[FieldViolation]) -> Content | None:
        media_type = _media_type(request.media_type, violations)
        return _content(request, media_type, violations, allow_private_urls=allow_private_urls)

    return check


def _contents(
    request: SendRequest, check: CheckContent, violations: list[FieldViolation]
) -> tuple[Content | None, tuple[Variant, ...]]:
    """The request's content and variants (the content is then the first variant's)."""
    if request.variants:  # invalid ones are no content: the request's own is empty then
        variants = validate_variants(request, check, violations)
        return (variants[0].content if variants else None), variants
    return check(request, violations), ()


def validate_content(request: SendRequest) -> tuple[Content, tuple[Variant, ...]]:
    """Check only the content of a SendMessage request, its variants included (PreviewMessage
    ignores the audience)."""
    violations: list[FieldViolation] = []
    content, variants = _contents(request, _content_check(allow_private_urls=False), violations)
    if violations:
        raise InvalidArgument(violations)
    assert content is not None
    return content, variants


def _content(
    request: SendRequest,
    media_type: MediaType | None,
    violations: list[FieldViolation],
    *,
    allow_private_urls: bool = False,
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
    options = rich_content.options(request, media_type, violations)
    if media_type in (MediaType.ALBUM, MediaType.COPY, MediaType.FORWARD):
        return _composite_content(
            request, media_type, options, violations, allow_private_urls=allow_private_urls
        )
    if media_type is MediaType.TEXT:
        if media_url:
            violations.append(
                FieldViolation("media_url", "is only for media; set media_type (e.g. photo)")
            )
        if request.media_data:
            violations.append(
                FieldViolation("media_data", "is only for media; set media_type (e.g. photo)")
            )
        _check_message(request, options, limit=TEXT_LIMIT, required=True, violations=violations)
        return Content(
            message=message,
            media_type=media_type,
            allow_paid_broadcast=request.allow_paid_broadcast,
            options=options,
        )
    upload = request.media_data
    filename = rich_content.base_filename(request.media_filename, media_type)
    if upload and media_url:
        violations.append(
            FieldViolation("media_url", "give either media_url or an uploaded file, not both")
        )
    elif upload:
        limit = rich_content.upload_limit(media_type)
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
    else:
        if request.media_filename:  # Telegram would never see it
            violations.append(
                FieldViolation("media_filename", "names an uploaded file; none is given")
            )
        rich_content.check_media_url(
            media_url, media_type, violations, allow_private_urls=allow_private_urls
        )
    if not media_type.takes_caption and message:
        violations.append(
            FieldViolation("message", f"must be empty: {media_type.value} takes no caption")
        )
    else:
        _check_message(request, options, limit=CAPTION_LIMIT, violations=violations)
    return Content(
        message=message,
        media_type=media_type,
        media_url=media_url or None,
        media_filename=filename if upload else None,
        allow_paid_broadcast=request.allow_paid_broadcast,
        options=options,
    )


def _check_message(
    request: SendRequest,
    options: ContentOptions,
    *,
    limit: int,
    required: bool = False,
    violations: list[FieldViolation],
) -> None:
    """``message`` as a text (``required``) or a caption, formatted by ``options``."""
    rich_content.check_text(
        "message",
        request.message,
        mode=options.parse_mode,
        limit=limit,
        personalize=request.personalize,
        required=required,
        violations=violations,
    )


def _composite_content(
    request: SendRequest,
    media_type: MediaType,
    options: ContentOptions,
    violations: list[FieldViolation],
    *,
    allow_private_urls: bool,
) -> Content:
    """Albums (their items carry the media and captions), copies and forwards (of
    ``source``)."""
    message = request.message
    where = "; give each album item its own" if media_type is MediaType.ALBUM else ""
    for field, given in (
        ("media_url", request.media_url.strip()),
        ("media_data", request.media_data),
    ):
        if given:
            violations.append(
                FieldViolation(field, f"is not for media_type {media_type.value}{where}")
            )
    if media_type is MediaType.ALBUM:
        if message:
            violations.append(
                FieldViolation(
                    "message", "an album has no text of its own; give items captions instead"
                )
            )
        items = rich_content.album(
            request.album,
            mode=options.parse_mode,
            personalize=request.personalize,
            violations=violations,
            allow_private_urls=allow_private_urls,
        )
        options = replace(options, album=items)
    else:
        source = rich_content.source(request.source, media_type, violations)
        options = replace(options, source=source)
        if media_type is MediaType.FORWARD:
            if message:
                violations.append(
                    FieldViolation(
                        "message", "a forward takes no caption; use media_type copy for a new one"
                    )
                )
            if request.personalize:
                violations.append(
                    FieldViolation("personalize", "a forward has no text to personalize")
                )
        else:
            _check_message(request, options, limit=CAPTION_LIMIT, violations=violations)
    return Content(
        message=message,
        media_type=media_type,
        allow_paid_broadcast=request.allow_paid_broadcast,
        options=options,
    )


def _audience(
    request: SendRequest, max_user_ids: int, violations: list[FieldViolation]
) -> tuple[Sequence[int], UserFilter | None]:
    """Exactly one of ``user_ids``, ``all_users`` and ``filter``: the distinct ids, or the
    checked filter. An empty filter is refused: every active user is said with ``all_users``
    (a filter built from a selection left empty must not reach everyone)."""
    given = [
        name
        for name, present in (
            ("user_ids", bool(request.user_ids)),
            ("all_users", request.all_users),
            ("filter", request.filter is not None),
        )
        if present
    ]
    if len(given) > 1:
        violations.append(
            FieldViolation(
                given[1],
                "give one audience: user_ids, all_users or filter, "
                + (f"not both {given[0]} and {given[1]}" if len(given) == 2 else "not all three"),
            )
        )
        return (), None
    if request.filter is not None:
        checked = audience_filter(request.filter, "filter", violations)
        if checked == UserFilter():  # {} or {"tags": []}: a selection left empty
            violations.append(FieldViolation("filter", _EMPTY_FILTER))
        return (), checked
    if request.all_users:
        return (), None
    if not request.user_ids:
        violations.append(
            FieldViolation(
                "user_ids",
                "name at least one recipient, set all_users to true to send to every active "
                "user, or give a filter",
            )
        )
        return (), None
    return checked_ids(request.user_ids, max_user_ids, violations), None


def validate_users(
    users: Sequence[UserProfile],
    *,
    field: str = "users",
    location: Callable[[int], str] | None = None,
    allow_repeats: bool = False,
) -> list[UserProfile]:
    """Check an UpsertUsers request (or one ImportUsers chunk): 1..10,000 users, valid ids,
    no id twice unless ``allow_repeats``, fields within Telegram's limits, valid tags.

    Returns the users normalized: ``language_code`` and tags lower-cased, tags distinct and
    sorted. ``field`` names the list and ``location(i)`` its ``i``-th user in violations
    (``users[3]`` by default).
    """
    where = location or (lambda index: f"{field}[{index}]")
    violations: list[FieldViolation] = []
    if not users:
        violations.append(FieldViolation(field, "must name at least one user"))
    if len(users) > MAX_USERS_PER_UPSERT:
        violations.append(
            FieldViolation(
                field, f"has {len(users)} users; at most {MAX_USERS_PER_UPSERT} per call"
            )
        )
        raise InvalidArgument(violations)
    first_index: dict[int, int] = {}
    checked: list[UserProfile] = []
    for index, user in enumerate(users):
        if user.id == 0 or not INT64_MIN <= user.id <= INT64_MAX:
            violations.append(FieldViolation(f"{where(index)}.id", "must be a Telegram user id"))
        elif user.id in first_index and not allow_repeats:
            violations.append(
                FieldViolation(
                    f"{where(index)}.id",
                    f"{user.id} is given twice (also {where(first_index[user.id])})",
                )
            )
        else:
            first_index.setdefault(user.id, index)
        for name, limit in _USER_FIELD_LIMITS.items():
            value = getattr(user, name)
            if value is not None and unencodable(value):
                violations.append(FieldViolation(f"{where(index)}.{name}", _UNENCODABLE))
            elif value is not None and len(value) > limit:
                violations.append(
                    FieldViolation(f"{where(index)}.{name}", f"is longer than {limit} characters")
                )
        tags = None if user.tags is None else _tags(user.tags, f"{where(index)}.tags", violations)
        language_code = (
            _ascii_lower(user.language_code) if user.language_code else user.language_code
        )
        if (
            language_code
            and len(language_code) <= _USER_FIELD_LIMITS["language_code"]
            and not _LANGUAGE_CODE.fullmatch(language_code)
        ):
            # What no language filter could ever select (nor a variant's language_codes).
            violations.append(FieldViolation(f"{where(index)}.language_code", _LANGUAGE_CODE_RULE))
        if len(violations) >= 50:
            break
        checked.append(replace(user, language_code=language_code, tags=tags))
    if violations:
        raise InvalidArgument(violations)
    return checked


MAX_TAGS_PER_USER = 100
MAX_FILTER_VALUES = 100
TAG_RULE = "1-64 characters of a-z, 0-9, _ - . : (upper-case letters are lower-cased)"
TAG_LENGTH = 64
_TAG = re.compile(r"[a-z0-9_.:-]{1,64}")
_LANGUAGE_CODE = re.compile(r"[a-z0-9_-]{1,35}")
_LANGUAGE_CODE_RULE = "is not a language code (1-35 letters, digits, - or _)"


def _ascii_lower(text: str) -> str:
    """Lower-cases ASCII letters only: Unicode's rules would turn the Kelvin sign into ``k``
    and let it pass a rule (and the OpenAPI pattern) that says a-z."""
    return text.translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _tags(given: Sequence[str], field: str, violations: list[FieldViolation]) -> tuple[str, ...]:
    """A user's tags, lower-cased, distinct and sorted.

    Tags are plain ASCII on purpose: matching them must not depend on the database's
    collation (MySQL/MariaDB compare case- and accent-insensitively, PostgreSQL and SQLite
    byte for byte), so the same filter selects the same users on every backend.
    """
    tags: set[str] = set()
    for index, tag in enumerate(given):
        normal = _ascii_lower(tag)
        if not _TAG.fullmatch(normal):
            violations.append(FieldViolation(f"{field}[{index}]", _tag_problem(tag)))
        else:
            tags.add(normal)
    if len(tags) > MAX_TAGS_PER_USER:
        violations.append(
            FieldViolation(field, f"has {len(tags)} tags; a user has at most {MAX_TAGS_PER_USER}")
        )
    return tuple(sorted(tags))


def _tag_problem(tag: str) -> str:
    if not tag:
        return f"is empty; a tag is {TAG_RULE}"
    if len(tag) > TAG_LENGTH:
        return f"is {len(tag)} characters; a tag is {TAG_RULE}"
    return f"{tag!r} is not a tag: {TAG_RULE}"


def audience_filter(given: UserFilter, field: str, violations: list[FieldViolation]) -> UserFilter:
    """A checked :class:`UserFilter`: tags as in :func:`validate_users`, language codes
    lower-cased (as users' are stored), at most :data:`MAX_FILTER_VALUES` of each."""
    tags: set[str] = set()
    for index, tag in enumerate(given.tags):
        normal = _ascii_lower(tag)
        if not _TAG.fullmatch(normal):
            violations.append(FieldViolation(f"{field}.tags[{index}]", _tag_problem(tag)))
        tags.add(normal)
    codes: set[str] = set()
    for index, code in enumerate(given.language_codes):
        normal = _ascii_lower(code)
        if not _LANGUAGE_CODE.fullmatch(normal):
            shown = repr(code) if len(code) <= 35 else f"{len(code)} characters"
            violations.append(
                FieldViolation(
                    f"{field}.language_codes[{index}]",
                    f"{shown} {_LANGUAGE_CODE_RULE}",
                )
            )
        codes.add(normal)
    for name, values in (("tags", tags), ("language_codes", codes)):
        if len(values) > MAX_FILTER_VALUES:
            violations.append(
                FieldViolation(
                    f"{field}.{name}", f"has {len(values)} values; at most {MAX_FILTER_VALUES}"
                )
            )
    return UserFilter(tags=tuple(sorted(tags)), language_codes=tuple(sorted(codes)))


def validate_user_filter(given: UserFilter | None, field: str = "filter") -> UserFilter | None:
    """:func:`audience_filter` raising :class:`InvalidArgument`; ``None`` stays ``None``."""
    if given is None:
        return None
    violations: list[FieldViolation] = []
    checked = audience_filter(given, field, violations)
    if violations:
        raise InvalidArgument(violations)
    return checked
