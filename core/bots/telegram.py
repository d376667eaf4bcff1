"""Checking a bot token with Telegram before it is stored: one ``getMe`` call.

:func:`get_me` answers the bot's id and username, or raises
:class:`~tgbroadcast.core.domain.errors.InvalidArgument` (400 / INVALID_ARGUMENT):

* on the field ``token`` with Telegram's own description when Telegram answered with an
  error (``Unauthorized`` for a revoked or unknown token);
* on the field ``api_url`` when the Bot API could not be reached, timed out or did not answer
  JSON: a 400 rather than a 503, since the usual cause is the URL the request gave and a
  retry of the same request would fail the same way.

The token is in the request path only: never in an error, a log line, or a followed
redirect (none are followed). A description that would repeat it is masked.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from tgbroadcast.core.domain.errors import InvalidArgument
from tgbroadcast.core.logs import redact_url

logger = logging.getLogger(__name__)

GET_ME_TIMEOUT: Final = 10.0
"""Seconds ``getMe`` may take, connection included."""
_MAX_ANSWER: Final = 64 * 1024
_MAX_DESCRIPTION: Final = 200


@dataclass(frozen=True, slots=True)
class BotIdentity:
    """Who the token belongs to, as ``getMe`` answered."""

    bot_id: int
    username: str


async def get_me(token: str, *, api_url: str, within: float = GET_ME_TIMEOUT) -> BotIdentity:
    """POST ``{api_url}/bot{token}/getMe``: the bot's identity, or ``InvalidArgument`` (see the
    module's docstring) — also once ``within`` seconds passed."""
    url = f"{api_url.rstrip('/')}/bot{token}/getMe"
    api_url = _masked(redact_url(api_url), token)  # shown in errors and logs from here on
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=within)) as session,
            session.post(url, allow_redirects=False) as response,
        ):
            status = response.status
            raw = await _answer(response)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        # Never str(exc): some of aiohttp's errors repeat the URL, which holds the token.
        logger.warning("getMe failed", extra={"api_url": api_url, "error": type(exc).__name__})
        raise _unreachable(api_url, "could not be reached") from None
    try:
        answer = json.loads(raw)
    except (ValueError, RecursionError):
        raise _unreachable(api_url, f"answered HTTP {status} without a Bot API answer") from None
    return _identity(answer, token, api_url, status)


async def _answer(response: aiohttp.ClientResponse) -> bytes:
    """The body, or its first :data:`_MAX_ANSWER` bytes (then it is not JSON anyway)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(8192):
        chunks.append(chunk)
        size += len(chunk)
        if size >= _MAX_ANSWER:
            break
    return b"".join(chunks)


def _identity(answer: Any, token: str, api_url: str, status: int) -> BotIdentity:
    if not isinstance(answer, dict):
        raise _unreachable(api_url, f"answered HTTP {status} without a Bot API answer")
    result = answer.get("result")
    if answer.get("ok") is True and isinstance(result, dict):
        bot_id, username = result.get("id"), result.get("username")
        if isinstance(bot_id, int) and not isinstance(bot_id, bool):
            return BotIdentity(
                bot_id=bot_id, username=username if isinstance(username, str) else ""
            )
    description = answer.get("description")
    if not isinstance(description, str) or not description:
        description = f"HTTP {status}"
    description = _masked(description, token)
    if len(description) > _MAX_DESCRIPTION:
        description = description[:_MAX_DESCRIPTION] + "…"
    raise InvalidArgument.single("token", f"Telegram refused it (getMe): {description}")


def _masked(text: str, token: str) -> str:
    """``text`` without the token or its secret part (a hostile or misconfigured server may
    repeat the request's path; a URL may hold the token by mistake)."""
    secret = token.partition(":")[2]
    return text.replace(token, "***").replace(secret, "***") if secret else text


def _unreachable(api_url: str, what: str) -> InvalidArgument:
    return InvalidArgument.single("api_url", f"the Bot API at {api_url} {what}")
