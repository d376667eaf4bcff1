"""Page tokens: the opaque cursors of every paginated list.

A token is the URL-safe base64 (unpadded) of ``<kind>:<position>``. The kind names the list
it came from (a broadcast's deliveries: that broadcast), so a token from one list is refused
by another rather than silently mis-positioning it; the position is the 64-bit id the next
page starts after (or before). Tokens are not secret and not signed: a client that forges
one only pages its own view differently. Anything :func:`decode` does not recognise is
refused with the reason, which callers report on the ``page_token`` field.
"""

from __future__ import annotations

import base64
import binascii
from typing import Final

from tgbroadcast.core.domain.errors import FieldViolation, InvalidArgument

USERS: Final = "u"
"""Users, by id (and, as tokens issued before deliveries had their own, deliveries)."""
BROADCASTS: Final = "b"
"""Broadcasts, newest first (the position is the id the next page is before)."""

FIELD: Final = "page_token"
DEFAULT_PAGE_SIZE: Final = 100
MAX_PAGE_SIZE: Final = 1000
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1


def deliveries(broadcast_id: int) -> str:
    """The kind of one broadcast's deliveries (by user id): another broadcast's list, or the
    users', refuses its tokens."""
    return f"d{broadcast_id}"


def encode(kind: str, position: int) -> str:
    """The token for the page after ``position`` in the list ``kind``."""
    return base64.urlsafe_b64encode(f"{kind}:{position}".encode()).decode().rstrip("=")


def decode(kind: str, token: str, *, legacy: tuple[str, ...] = ()) -> int:
    """The position ``token`` holds; ``ValueError`` (its message says why, never echoing the
    token) when it is not a token of the list ``kind`` (or an older kind of it, ``legacy``:
    a server of the version before still issues those in a rolling upgrade) that this
    service issued."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("is not a token this service issued (not base64)") from None
    found, _, value = raw.partition(":")
    if found != kind and found not in legacy:
        raise ValueError("is not a token this service issued for this list")
    digits = value.removeprefix("-")
    if not digits.isascii() or not digits.isdigit():
        raise ValueError("is not a token this service issued (bad position)")
    position = int(value)
    if not _INT64_MIN <= position <= _INT64_MAX:
        raise ValueError("is not a token this service issued (position out of range)")
    return position


def page_size_violations(page_size: int) -> list[FieldViolation]:
    """What is wrong with a requested page size (0 asks for :data:`DEFAULT_PAGE_SIZE`)."""
    if 0 <= page_size <= MAX_PAGE_SIZE:
        return []
    message = f"must be between 1 and {MAX_PAGE_SIZE} (0 or absent: {DEFAULT_PAGE_SIZE})"
    return [FieldViolation("page_size", message)]


def validate_page(
    page_size: int, page_token: str, *, kind: str = USERS, legacy: tuple[str, ...] = ()
) -> tuple[int, int | None]:
    """``(limit, after_id)`` from a page request of a list keyed by user id (``kind``, see
    :func:`decode`); 0 means the default size."""
    violations = page_size_violations(page_size)
    after: int | None = None
    if page_token:
        try:
            after = decode(kind, page_token, legacy=legacy)
        except ValueError as exc:
            violations.append(FieldViolation(FIELD, str(exc)))
    if violations:
        raise InvalidArgument(violations)
    return page_size or DEFAULT_PAGE_SIZE, after
