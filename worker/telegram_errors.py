"""Telegram's answers as our errors: the one place aiogram's, aiohttp's and asyncio's
exceptions become :class:`~tgbroadcast.core.domain.errors.TelegramError` subclasses, with the
retry decision on them (``retryable``, ``outcome``, ``retry_after``, ``new_chat_id``).

A refusal keeps Telegram's description exactly (``Forbidden: bot was blocked by the user``),
since users are shown it; no description ever contains the bot token (``bot<digits>:<secret>``
is masked as ``bot<digits>:***`` whatever the exception carried).
"""

from __future__ import annotations

import logging

import aiohttp
from aiogram.exceptions import (
    ClientDecodeError,
    TelegramAPIError,
    TelegramBadRequest,
    TelegramConflictError,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)

from tgbroadcast.core.domain.errors import (
    ChatMigrated,
    PermanentError,
    RateLimited,
    TelegramError,
    TransientError,
)
from tgbroadcast.core.domain.model import DeliveryState
from tgbroadcast.core.logs import redact

logger = logging.getLogger(__name__)

# aiogram's refusals carry no status code; these are the codes its classes stand for.
_PERMANENT: tuple[tuple[type[TelegramAPIError], int], ...] = (
    (TelegramEntityTooLarge, 413),  # before TelegramNetworkError, which it subclasses
    (TelegramBadRequest, 400),
    (TelegramUnauthorizedError, 401),
    (TelegramForbiddenError, 403),
    (TelegramNotFound, 404),
    (TelegramConflictError, 409),
)

_ORIGINAL = "\nOriginal description: "


def _telegram_description(exc: TelegramAPIError) -> str:
    """Telegram's own text: aiogram rewrites it for flood control and migration."""
    message = exc.message
    if _ORIGINAL in message:
        return message.rsplit(_ORIGINAL, 1)[1]
    return message


_OUTCOMES: tuple[tuple[int, tuple[str, ...], DeliveryState], ...] = (
    (403, ("blocked by the user",), DeliveryState.BLOCKED),
    (403, ("user is deactivated",), DeliveryState.DEACTIVATED),
    (403, ("can't initiate", "cant initiate"), DeliveryState.CANT_INITIATE),
    (403, ("kicked", "not a member", "chat was deleted"), DeliveryState.KICKED),
    (400, ("chat not found", "user not found", "peer_id_invalid"), DeliveryState.CHAT_NOT_FOUND),
)

_CONTENT_ERRORS = (
    "message is too long",
    "caption is too long",
    "message text is empty",
    "text must be non-empty",
    "wrong file identifier",
    "wrong remote file identifier",
    "failed to get http url content",
    "wrong type of the web page content",
    "can't use file of type",
    "can't parse entities",
    "unsupported parse_mode",
    "file must be non-empty",
    "media_empty",
    "photo_invalid_dimensions",
    "there is no",
    "message to copy not found",
    "message to forward not found",
    "message can't be copied",
    "can't parse inline keyboard button",
    "button_data_invalid",
    "button_url_invalid",
    "reply markup is too long",
    "media_group_invalid",
    "can't be mixed with other media types",
)


def permanent_error(error_code: int, description: str) -> PermanentError:
    """One of Telegram's refusals as a :class:`PermanentError`, classified: the recipient's
    outcome, and whether the message itself is at fault (then every recipient would be
    refused the same way)."""
    text = description.lower()
    outcome = DeliveryState.BAD_REQUEST
    for code, needles, state in _OUTCOMES:
        if code == error_code and any(needle in text for needle in needles):
            outcome = state
            break
    # A wrong token (401) or API address (404) fails every send just like bad content.
    content_error = error_code in (401, 404) or (
        outcome is DeliveryState.BAD_REQUEST and any(n in text for n in _CONTENT_ERRORS)
    )
    return PermanentError(
        description, error_code=error_code, outcome=outcome, content_error=content_error
    )


def map_error(exc: BaseException) -> TelegramError:
    """The one place aiogram's / aiohttp's / asyncio's exceptions become ours.

    429 → :class:`RateLimited`; a migrated group → :class:`ChatMigrated`; Telegram's
    refusals (400, 401, 403, 404, 409, 413) → :class:`PermanentError` with Telegram's
    description and code; 5xx, network errors, timeouts and answers that are not the Bot
    API's JSON → :class:`TransientError`. Anything else is logged and also transient.
    Bot tokens are masked in every description.
    """
    if isinstance(exc, TelegramError):
        return exc
    if isinstance(exc, TelegramRetryAfter):
        return RateLimited(redact(_telegram_description(exc)), retry_after=float(exc.retry_after))
    if isinstance(exc, TelegramMigrateToChat):
        return ChatMigrated(redact(_telegram_description(exc)), new_chat_id=exc.migrate_to_chat_id)
    for refusal, code in _PERMANENT:
        if isinstance(exc, refusal):
            return permanent_error(code, redact(exc.message))
    if isinstance(exc, TelegramServerError):
        return TransientError(redact(exc.message))
    if isinstance(exc, TelegramNetworkError):
        return TransientError(redact(f"network error: {exc.message}"))
    if isinstance(exc, ClientDecodeError):
        return TransientError(f"the answer was not the Bot API's JSON ({exc.message})")
    if isinstance(exc, aiohttp.ClientError | OSError):
        # TimeoutError is an OSError; str() of a bare timeout is empty.
        detail = str(exc) or ("timed out" if isinstance(exc, TimeoutError) else "no detail")
        return TransientError(redact(f"network error: {type(exc).__name__}: {detail}"))
    description = redact(f"unexpected {type(exc).__name__}: {exc}")
    logger.error(
        "unexpected error from the Telegram client",
        extra={"error_type": type(exc).__name__, "error": description},
    )
    return TransientError(description)


def of_copy_source(error: TelegramError, chat_id: int, source: int) -> TelegramError:
    """A copy's or a forward's refusal as what it is about. Telegram checks the source chat
    first, and a private chat (a positive id) is no group or channel the bot was kicked from,
    that was deleted or upgraded: such a refusal to one concerns the source, and every
    recipient would be refused alike — a content error, not the recipient's outcome. An
    upgrade (only a basic group's: a negative id above the supergroups' ``-100...``) from a
    basic group's source may be either chat's: a content error too, rather than a move of the
    recipient to what may be the source's new chat."""
    if isinstance(error, ChatMigrated) and (chat_id > 0 or _BASIC_GROUPS < source < 0):
        return PermanentError(str(error), error_code=400, content_error=True)
    if chat_id > 0 and isinstance(error, PermanentError) and error.outcome is DeliveryState.KICKED:
        return PermanentError(str(error), error_code=error.error_code, content_error=True)
    return error


_BASIC_GROUPS = -1_000_000_000_000
"""Supergroup and channel ids are ``-100`` and ten digits, below this; basic groups above."""
