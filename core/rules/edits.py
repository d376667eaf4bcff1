"""EditBroadcast's request, checked against the broadcast it edits.

An edit replaces what Telegram's ``editMessage*`` methods replace, and only that: the text
(of a text message) or the caption (of a media message, a copy, an album's first item), its
formatting (``parse_mode`` or ``entities``), the inline keyboard (given or removed: an edit
without ``reply_markup`` removes the keyboard, as Telegram's edits do), and for a single
photo, video, animation, document or audio file the media (``media_url``: a file_id or a URL
Telegram fetches itself). Everything else — the kind, flags, link preview, personalization —
stays as sent. A forward cannot be edited (Telegram does not let a bot edit a forward).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from tgbroadcast.core.domain.content import Entity, InlineKeyboard
from tgbroadcast.core.domain.errors import FailedPrecondition, FieldViolation, InvalidArgument
from tgbroadcast.core.domain.model import (
    CAPTION_LIMIT,
    TEXT_LIMIT,
    Content,
    ContentEdit,
    MediaType,
)
from tgbroadcast.core.rules import rich_content
from tgbroadcast.core.rules.validation import SendRequest, unencodable

MEDIA_EDITABLE = frozenset(
    {MediaType.PHOTO, MediaType.VIDEO, MediaType.ANIMATION, MediaType.DOCUMENT, MediaType.AUDIO}
)
"""Kinds whose media an edit may replace (editMessageMedia's; not voice, video notes, stickers)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EditRequest:
    """An EditBroadcast request as it came in, before validation (both transports)."""

    message: str = ""
    """The new text or caption (empty: no caption)."""
    parse_mode: str = ""
    entities: Sequence[Entity] = ()
    reply_markup: InlineKeyboard | None = None
    """The new keyboard; ``None`` removes the one sent."""
    media_url: str = ""
    """New media (a single media message's): a file_id or a URL Telegram fetches; empty
    keeps the media."""


def validate_edit(request: EditRequest, content: Content, *, broadcast_id: int) -> ContentEdit:
    """The edit ``request`` makes to ``content`` (the broadcast's latest);
    ``InvalidArgument`` listing every problem, ``FailedPrecondition`` (state ``forward``) for
    a forward."""
    kind = content.media_type
    if kind is MediaType.FORWARD:
        raise FailedPrecondition(
            f"broadcast {broadcast_id} is a forward: Telegram does not let a bot edit a "
            "forwarded message",
            state="forward",
        )
    violations: list[FieldViolation] = []
    media_url = request.media_url.strip()
    for field, text in (("message", request.message), ("media_url", media_url)):
        if unencodable(text):
            violations.append(
                FieldViolation(field, "contains a NUL character or an unpaired surrogate")
            )
    if violations:
        raise InvalidArgument(violations)
    old = content.options
    as_send = SendRequest(
        message=request.message,
        media_type=kind.value,
        parse_mode=request.parse_mode,
        entities=request.entities,
        reply_markup=request.reply_markup,
        disable_notification=old.disable_notification,
        protect_content=old.protect_content,
        link_preview_options=old.link_preview,
        personalize=old.personalize,
    )
    options = rich_content.options(as_send, kind, violations)
    options = replace(options, album=old.album, source=old.source)
    if kind is MediaType.TEXT:
        limit, required = TEXT_LIMIT, True
    else:
        limit, required = CAPTION_LIMIT, False
    if kind.takes_caption or kind in (MediaType.TEXT, MediaType.ALBUM):
        rich_content.check_text(
            "message",
            request.message,
            mode=options.parse_mode,
            limit=limit,
            personalize=old.personalize,
            required=required,
            violations=violations,
        )
    elif request.message:
        violations.append(
            FieldViolation("message", f"must be empty: {kind.value} takes no caption")
        )
    if kind is MediaType.ALBUM and options.album:  # the album's caption is its first item's
        first = replace(options.album[0], caption=request.message)
        options = replace(options, album=(first, *options.album[1:]))
    if media_url:
        if kind not in MEDIA_EDITABLE:
            editable = ", ".join(sorted(k.value for k in MEDIA_EDITABLE))
            violations.append(
                FieldViolation(
                    "media_url",
                    f"the media of a {kind.value} broadcast cannot be replaced; only that of "
                    f"a {editable}",
                )
            )
        elif not rich_content.is_media_reference(media_url):
            violations.append(
                FieldViolation("media_url", "must be an http(s) URL or a Telegram file_id")
            )
        elif rich_content.fetched_by_service(kind.value, media_url):
            violations.append(
                FieldViolation(
                    "media_url",
                    "Telegram does not fetch this by URL for an edit (a document only as "
                    "GIF, PDF or ZIP); give a file_id",
                )
            )
    if violations:
        raise InvalidArgument(violations)
    return ContentEdit(
        message=request.message if kind is not MediaType.ALBUM else content.message,
        options=options,
        media_url=media_url or None,
    )
