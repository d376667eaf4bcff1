"""Every error the service raises on purpose, in one tree.

::

    BroadcastingError
    ├── ConfigError              bad configuration; names the key (start-up fails fast)
    ├── NatsServerError          the embedded nats-server could not start (its log tail inside)
    ├── QueueError               a NATS operation failed (publish not acknowledged, JetStream down)
    │   └── MediaGone            uploaded media is no longer kept (expired, or NATS data lost)
    ├── ApiError                 answered to an API caller (gRPC status / HTTP problem)
    │   ├── InvalidArgument      INVALID_ARGUMENT / 400, with one violation per bad field
    │   │   └── ImportRefused    a bad ImportUsers chunk; ``imported`` users before it stay
    │   ├── NotFound             NOT_FOUND / 404
    │   ├── FailedPrecondition   FAILED_PRECONDITION / 409: the broadcast's state (``state``)
    │   │                        does not allow the move (see ``tgbroadcast.core.domain.states``)
    │   ├── AlreadyExists        ALREADY_EXISTS / 409: an idempotency key reused with another
    │   │                        request
    │   └── ResourceExhausted    RESOURCE_EXHAUSTED / 429: a configured limit is reached
    │                            (``retry_after`` seconds when waiting helps)
    └── TelegramError            one Bot API call failed; mapped once from aiogram
        ├── RateLimited          429: wait ``retry_after`` seconds, then retry (not an attempt)
        ├── ChatMigrated         the group became a supergroup: resend to ``new_chat_id``
        ├── PermanentError       final for this recipient, with its ``outcome`` (blocked, chat
        │                        not found, ...) and whether the content itself is at fault
        └── TransientError       worth retrying with backoff (5xx, network, timeout, non-JSON)

The retry decision travels on a :class:`TelegramError` as data — ``retryable``, and the
``outcome`` a recipient ends with when the error ends its delivery — so the retry loop
branches on it, not on scattered ``isinstance`` checks. No message here ever contains a
token.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from nats.errors import Error as NatsError
from sqlalchemy.exc import InterfaceError, OperationalError

from tgbroadcast.core.domain.model import DeliveryResult, DeliveryState


class BroadcastingError(Exception):
    """The root of the service's own errors."""


class ConfigError(BroadcastingError):
    """The configuration is invalid; ``key`` is the dotted config key (``server.port``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config {key}: {message}")
        self.key = key
        self.message = message


class NatsServerError(BroadcastingError):
    """The embedded nats-server could not be started or found."""


class QueueError(BroadcastingError):
    """A NATS operation failed (publish not acknowledged, JetStream unavailable)."""


class MediaGone(QueueError):
    """Media uploaded through the API is gone from the object store: kept for 7 days, or lost
    with NATS's data. Waiting does not bring it back."""


class ApiError(BroadcastingError):
    """An error answered to an API caller; ``str()`` is safe to show them."""


_BOT_TOKEN = re.compile(r"(\d{3,20}):[A-Za-z0-9_-]{20,}")
"""A bot token, as :mod:`tgbroadcast.core.logs` masks it (the domain imports no other layer)."""


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field of a request: ``field`` is its path (``user_ids[3]``). A bot token in
    either (one sent in the wrong field, repeated by the message) is masked, ``123:***``:
    no answer repeats one."""

    field: str
    description: str

    def __post_init__(self) -> None:
        for name in ("field", "description"):
            text = getattr(self, name)
            if ":" in text:
                object.__setattr__(self, name, _BOT_TOKEN.sub(r"\1:***", text))


class InvalidArgument(ApiError):
    """The request is invalid; nothing was written."""

    def __init__(self, violations: Iterable[FieldViolation]) -> None:
        self.violations = tuple(violations)
        if not self.violations:
            raise ValueError("InvalidArgument needs at least one violation")
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in self.violations))

    @classmethod
    def single(cls, field: str, description: str) -> InvalidArgument:
        return cls([FieldViolation(field, description)])


class ImportRefused(InvalidArgument):
    """An ImportUsers chunk was invalid: it and every later one were not written, while the
    ``imported`` users of the chunks before it are committed."""

    def __init__(self, violations: Iterable[FieldViolation], *, imported: int) -> None:
        super().__init__(violations)
        self.imported = imported
        self.args = (f"{self.args[0]} (the {imported} users before it were imported)",)


class NotFound(ApiError):
    """The named resource does not exist."""


class Expired(NotFound):
    """The named resource existed but no longer serves (a tracked link past its retention):
    HTTP 410 Gone where the transport has it."""


class FailedPrecondition(ApiError):
    """The resource's state does not allow the operation; ``state`` names that state and
    ``subject`` what has it (a ``broadcast``, a ``bot``, the ``service``)."""

    def __init__(self, message: str, *, state: str, subject: str = "broadcast") -> None:
        super().__init__(message)
        self.state = state
        self.subject = subject


class AlreadyExists(ApiError):
    """The request collides with an existing resource (an idempotency key reused with a
    different request); nothing was written."""


class ResourceExhausted(ApiError):
    """A configured limit is reached (``server.max_pending_recipients``, ...); nothing was
    written. ``retry_after``: seconds after which trying again may succeed, when known."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TelegramError(BroadcastingError):
    """A Bot API call failed. ``description`` is Telegram's text (or ours for network errors).

    ``retryable``: whether sending again may succeed. When the error ends a recipient's
    delivery — at once if it is not retryable, or once retries run out — ``outcome`` is the
    recipient's final state, and ``content_error`` whether the message itself is at fault.
    """

    retryable: bool = False
    outcome: DeliveryState = DeliveryState.FAILED
    content_error: bool = False

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description

    def result(self, broadcast_id: int, user_id: int) -> DeliveryResult:
        """The final result of a recipient whose delivery this error ended: its ``outcome``,
        with Telegram's description (or ours), finished now."""
        return DeliveryResult(
            broadcast_id=broadcast_id,
            user_id=user_id,
            state=self.outcome,
            error=self.description,
            finished_at=datetime.now(UTC),
        )


class RateLimited(TelegramError):
    """429 Too Many Requests: the bot must pause for ``retry_after`` seconds."""

    retryable = True

    def __init__(self, description: str, *, retry_after: float) -> None:
        super().__init__(description)
        self.retry_after = retry_after


class ChatMigrated(TelegramError):
    """The group was upgraded to a supergroup; the same message goes to ``new_chat_id``."""

    retryable = True

    def __init__(self, description: str, *, new_chat_id: int) -> None:
        super().__init__(description)
        self.new_chat_id = new_chat_id


class PermanentError(TelegramError):
    """Telegram refused the message for good; ``error_code`` is its HTTP-like code.

    ``outcome`` is the recipient's final state. ``content_error`` means the message itself
    (or the bot) is at fault — too long, a bad file URL — so every recipient would fail too.
    """

    def __init__(
        self,
        description: str,
        *,
        error_code: int,
        outcome: DeliveryState = DeliveryState.BAD_REQUEST,
        content_error: bool = False,
    ) -> None:
        super().__init__(description)
        self.error_code = error_code
        self.outcome = outcome
        self.content_error = content_error


class TransientError(TelegramError):
    """A failure that may pass: 5xx, a network error, a timeout, a non-JSON answer."""

    retryable = True


BACKEND_UNAVAILABLE: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    QueueError,
    NatsError,
    OSError,
)
"""Failures that mean the database or NATS cannot be reached right now (API callers get
503 / UNAVAILABLE and may retry): connection-type SQL errors — not data errors —, NATS
errors, and socket errors (asyncpg raises plain ``OSError`` when PostgreSQL is down)."""
