"""Click tracking (``track_clicks``): each recipient's links lead through the service.

A tracked broadcast keeps a random key (``broadcasts.click_key``) and the public address the
service had when it was sent (``click_base``, ``server.public_url``). Before a send, a
worker replaces every link of the recipient's content — URL buttons first, row by row, then
the text's ``text_link`` entities in text order (also those written as HTML or MarkdownV2
links: the text is then sent with explicit entities, as Telegram would have parsed it) — by
``{click_base}/c/{code}``. The code (:func:`encode`) is the broadcast, the recipient, its
variant's position and the link's position, signed with the broadcast's key (HMAC-SHA256,
96 bits): unguessable, and nothing is stored per link or recipient before a click.

``GET /c/{code}`` checks the signature, renders the recipient's content again (its variant,
personalized for it, as the latest edit left it) and redirects to the link at that position.
Album captions are not rewritten. A text's link preview shows its first link, as Telegram
would without tracking: the worker names the original link as the preview's ``url`` (unless the
preview is off or names one), so Telegram's preview fetcher never opens a tracked link.
``GET /c/{code}`` records no click for a ``HEAD`` request or Telegram's own fetcher
(``User-Agent: TelegramBot``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Final

from tgbroadcast.core.domain.content import Entity, InlineButton, InlineKeyboard, LinkPreview
from tgbroadcast.core.domain.model import Broadcast, Content, MediaType
from tgbroadcast.core.rules.formatting import FormattingError, parse

CLICK_PATH: Final = "/c/"
"""Where tracked links lead, after the service's public address."""
MAX_LINKS: Final = 1000
"""Links tracked per message (the rest are left as they are)."""
_PAYLOAD: Final = struct.Struct(">qqBH")
"""broadcast id, user id, variant position, link position."""
_TAG_BYTES: Final = 12
_ENTITY_FIELDS: Final = frozenset(f.name for f in fields(Entity))


@dataclass(frozen=True, slots=True)
class ClickCode:
    """What a code names: a link of one recipient's message of a broadcast."""

    broadcast_id: int
    user_id: int
    variant: int
    """The position of the recipient's variant (0 without variants)."""
    link: int
    """The link's position among the message's links (see :func:`links`)."""


def encode(code: ClickCode, key: bytes) -> str:
    """The URL-safe code for ``code``, signed with the broadcast's ``key``."""
    payload = _PAYLOAD.pack(code.broadcast_id, code.user_id, code.variant, code.link)
    tag = hmac.new(key, payload, hashlib.sha256).digest()[:_TAG_BYTES]
    return base64.urlsafe_b64encode(payload + tag).decode().rstrip("=")


def decode_unverified(text: str) -> tuple[ClickCode, bytes, bytes] | None:
    """The code's claim, payload and tag, not yet checked (:func:`verify`); ``None`` when
    it is not shaped as a code."""
    if len(text) > 64:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(raw) != _PAYLOAD.size + _TAG_BYTES:
        return None
    payload, tag = raw[: _PAYLOAD.size], raw[_PAYLOAD.size :]
    return ClickCode(*_PAYLOAD.unpack(payload)), payload, tag


def verify(payload: bytes, tag: bytes, key: bytes) -> bool:
    """Whether ``tag`` signs ``payload`` with ``key`` (in constant time)."""
    expected = hmac.new(key, payload, hashlib.sha256).digest()[:_TAG_BYTES]
    return hmac.compare_digest(expected, tag)


def links(content: Content) -> list[str]:
    """The URLs of ``content``'s links in tracking order: URL buttons row by row, then the
    text's links in text order."""
    found = [b.url for row in _rows(content) for b in row if b.url is not None]
    entities = _entities(content)
    if entities is not None:
        found.extend(e.url for e in entities[1] if e.type == "text_link" and e.url)
    return found[:MAX_LINKS]


def tracked(content: Content, link_url: Callable[[int], str]) -> Content:
    """``content`` with its ``i``-th link replaced by ``link_url(i)``."""
    position = 0

    def next_url() -> str:
        nonlocal position
        url = link_url(position) if position < MAX_LINKS else None
        position += 1
        return url or ""

    options = content.options
    if options.reply_markup is not None:
        rows = tuple(
            tuple(
                b if b.url is None else InlineButton(text=b.text, url=next_url() or b.url)
                for b in row
            )
            for row in options.reply_markup.rows
        )
        options = replace(options, reply_markup=InlineKeyboard(rows=rows))
    message = content.message
    found = _entities(content)
    if found is not None and any(e.type == "text_link" for e in found[1]):
        message, entities = found
        rewritten = tuple(
            replace(e, url=next_url() or e.url) if e.type == "text_link" and e.url else e
            for e in entities
        )
        options = replace(options, parse_mode=None, entities=rewritten)
        first = next(e.url for e in entities if e.type == "text_link" and e.url)
        preview = options.link_preview or LinkPreview()
        if content.media_type is MediaType.TEXT and not preview.is_disabled and not preview.url:
            # Telegram previews a text's first link by fetching it: the original, fetched once,
            # not each recipient's tracked link (which would count as its click).
            options = replace(options, link_preview=replace(preview, url=first))
    return replace(content, message=message, options=options)


def for_recipient(content: Content, broadcast: Broadcast, user_id: int, variant: int) -> Content:
    """The recipient's ``content`` with its links tracked, if ``broadcast`` tracks clicks."""
    key, base = broadcast.click_key, broadcast.click_base
    if key is None or base is None:
        return content
    secret = bytes.fromhex(key)

    def link_url(link: int) -> str:
        code = ClickCode(broadcast.id, user_id, variant, link)
        return f"{base}{CLICK_PATH}{encode(code, secret)}"

    return tracked(content, link_url)


def _rows(content: Content) -> tuple[tuple[InlineButton, ...], ...]:
    markup = content.options.reply_markup
    return () if markup is None else markup.rows


def _entities(content: Content) -> tuple[str, tuple[Entity, ...]] | None:
    """The text and its entities as Telegram will see them: the explicit ones, or those
    its markup parses to; ``None`` when they cannot be sent as explicit entities (an entity
    kind :class:`Entity` does not carry, or markup that does not parse)."""
    options = content.options
    if options.parse_mode is None:
        ordered = sorted(options.entities, key=lambda e: e.offset)
        return content.message, tuple(ordered)
    try:
        parsed = parse(content.message, options.parse_mode.telegram)
    except (FormattingError, ValueError):
        return None
    if any(set(e) - _ENTITY_FIELDS for e in parsed.entities):
        return None  # a field :class:`Entity` does not carry (a newer Bot API's)
    entities = tuple(Entity(**e) for e in parsed.entities)
    return parsed.text, tuple(sorted(entities, key=lambda e: e.offset))


__all__ = [
    "CLICK_PATH",
    "MAX_LINKS",
    "ClickCode",
    "decode_unverified",
    "encode",
    "for_recipient",
    "links",
    "tracked",
    "verify",
]
