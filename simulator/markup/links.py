"""The links inside formatted text, judged as the Bot API server judges them.

A text link's URL is checked and normalized (``example.com`` becomes ``http://example.com/``);
a link Telegram would not accept yields ``None`` and the entity is dropped, not refused.
``tg://user?id=N`` turns the link into a mention of user N. Custom emoji and date-time
entities carry their argument in a ``tg://`` URL whose mistakes are refused with Telegram's
texts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

_HOST = re.compile(
    r"[A-Za-z0-9\u0080-\U0010ffff](?:[A-Za-z0-9\u0080-\U0010ffff.-]*[A-Za-z0-9\u0080-\U0010ffff])?"
)
_TG_SCHEMES = ("tg", "ton", "tonsite")
_TIME_FORMAT = re.compile(r"r|w?[dD]?[tT]?")


class LinkError(ValueError):
    """A ``tg://`` argument URL is malformed; ``str()`` is Telegram's reason."""


@dataclass(frozen=True, slots=True)
class DateTime:
    """The argument of a ``date_time`` entity."""

    unix_time: int
    date_time_format: str


def checked_link(url: str) -> str | None:
    """``url`` as Telegram stores it in a ``text_link``, or ``None`` when it is no link."""
    url = url.strip()
    if not url or any(ch.isspace() for ch in url):
        return None
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "http", url
    scheme = scheme.lower()
    if scheme in _TG_SCHEMES:
        return f"{scheme}://{rest}" if rest else None
    if scheme not in ("http", "https"):
        return None
    try:
        split = urlsplit(f"{scheme}://{rest}")
    except ValueError:  # a malformed [host]
        return None
    host = split.hostname or ""
    if not _HOST.fullmatch(host) or ".." in host or (not sep and "." not in host):
        return None
    try:
        split.port  # noqa: B018 -- raises for a malformed port
    except ValueError:
        return None
    path = split.path or "/"
    normalized = f"{scheme}://{split.netloc}{path}"
    if split.query:
        normalized += f"?{split.query}"
    if split.fragment:
        normalized += f"#{split.fragment}"
    return normalized


def mentioned_user(url: str) -> int | None:
    """The user id of a ``tg://user?id=N`` link; ``None`` for any other URL."""
    try:
        split = urlsplit(url.strip())
    except ValueError:  # a malformed [host]
        return None
    if (
        split.scheme.lower() != "tg"
        or split.netloc.lower() != "user"
        or split.path not in ("", "/")
    ):
        return None
    values = parse_qs(split.query).get("id", [])
    if len(values) != 1 or not values[0].isdigit():
        return None
    user_id = int(values[0])
    return user_id if 0 < user_id < 2**53 else None


def custom_emoji_id(url: str) -> str:
    """The identifier in ``tg://emoji?id=N``; :class:`LinkError` with Telegram's text."""
    try:
        split = urlsplit(url)
    except ValueError:  # a malformed [host]; Telegram's text for it is not known
        raise LinkError("Custom emoji URL must have an emoji identifier") from None
    if split.scheme.lower() != "tg":
        raise LinkError("Custom emoji URL must have scheme tg")
    if split.netloc.lower() != "emoji":
        raise LinkError('Custom emoji URL must have host "emoji"')
    values = parse_qs(split.query).get("id", [])
    if not values:
        raise LinkError("Custom emoji URL must have an emoji identifier")
    return emoji_identifier(values[0])


def emoji_identifier(value: str) -> str:
    """A custom emoji identifier: a non-zero 64-bit integer, as text."""
    if not re.fullmatch(r"-?[0-9]+", value) or not 0 < abs(int(value)) < 2**63:
        raise LinkError("Invalid custom emoji identifier specified")
    return str(int(value))


def date_time(url: str) -> DateTime:
    """The argument of ``tg://time?unix=T&format=F`` (the caller saw the ``tg://time``);
    :class:`LinkError` with the reason."""
    try:
        split = urlsplit(url)
    except ValueError:  # a malformed [host]
        raise LinkError("Invalid date and time format specified") from None
    query = parse_qs(split.query, keep_blank_values=True)
    return date_time_of(query.get("unix", [""])[0], query.get("format", [""])[0])


def date_time_of(unix: str, time_format: str) -> DateTime:
    """The ``date_time`` argument from its parts; :class:`LinkError` when they are invalid."""
    if not re.fullmatch(r"[0-9]{1,10}", unix):
        raise LinkError("Invalid Unix time specified")
    if not _TIME_FORMAT.fullmatch(time_format):
        raise LinkError("Invalid date and time format specified")
    return DateTime(int(unix), time_format)
