"""What a ``callback_url`` must look like: an ``http(s)`` URL with a host, at most
:data:`MAX_CALLBACK_URL` characters, whose host is not an internal address spelled out
(:mod:`.addresses`; a host name is checked when the webhook is delivered).

May import: :mod:`tgbroadcast.core.domain` and :mod:`.addresses`. No I/O.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

from tgbroadcast.core.domain.errors import FieldViolation
from tgbroadcast.core.rules import addresses

MAX_CALLBACK_URL: Final = 2048
CHARACTERS: Final = "must be an http(s) URL without spaces, backslashes or control characters"


def checked(
    value: str, accept: bool, violations: list[FieldViolation], *, allow_private: bool
) -> str | None:
    """``callback_url`` of a request, stripped (``None`` when empty), or a violation added.
    ``accept`` is false when no webhook secret is configured: a receiver could not verify
    anything."""
    url = value.strip()
    if not url:
        return None
    if not accept:
        found = "needs a webhook secret on the server (webhook.secret / TGB_WEBHOOK_SECRET)"
    else:
        found = problem(url, allow_private=allow_private)
    if found:
        violations.append(FieldViolation("callback_url", found))
        return None
    return url


def problem(url: str, *, allow_private: bool) -> str:
    """What is wrong with ``url`` (stripped, not empty) as a webhook target; empty: nothing."""
    if len(url) > MAX_CALLBACK_URL:
        return f"is {len(url)} characters; at most {MAX_CALLBACK_URL}"
    # A backslash: browsers read "http://a\@b/" as host a, urlsplit as host b.
    # A lone surrogate (JSON lets a client send "\ud800") cannot be stored or sent.
    if any(ch.isspace() or ord(ch) < 32 or ch == "\\" or "\ud800" <= ch <= "\udfff" for ch in url):
        return CHARACTERS
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 -- raises ValueError for a port out of range
    except ValueError:
        valid = False
    if not valid:
        return "must be an http(s) URL with a host"
    refused = addresses.host_refusal(parts.hostname or "", allow_private=allow_private)
    if refused:
        return (
            f"must not reach an internal network: {refused} (allowed only with {addresses.SETTING})"
        )
    return ""
