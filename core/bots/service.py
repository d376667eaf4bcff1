"""Create, list, get and delete bots: the one core both API transports call for
``/v1/bots`` and ``CreateBot``/``ListBots``/``GetBot``/``DeleteBot``.

Guarantees:

* A created bot's token was accepted by Telegram's ``getMe`` a moment before it was stored,
  and is stored sealed (:mod:`.sealing`), never in clear; no answer, error or log line
  repeats it.
* Names are unique among configured and stored bots; a token is the token of one bot only
  (refused as ``AlreadyExists`` without repeating it).
* A configured bot (``telegram.token``, ``bots:``) is never deleted through the API.
* A bot with unfinished broadcasts (scheduled, queued, running, paused) is not deleted, and a
  send racing the delete is refused if the delete wins (the store holds the bot's row).
* A deleted bot's name stays its Telegram bot's (a tombstone in the store): only the same
  bot, with a new token, takes it back, with its users; another bot is ``AlreadyExists``.
* The caller sees only the bots ``visible`` admits (the API token's bots): another bot is
  ``NotFound``, exactly as one that does not exist.
* This process's :class:`~.directory.BotDirectory` is refreshed after every change; other
  processes see it at their next refresh or lookup.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Final
from urllib.parse import urlsplit

from tgbroadcast.core.bots.directory import BotDirectory
from tgbroadcast.core.bots.sealing import Sealer, token_hash
from tgbroadcast.core.bots.telegram import BotIdentity, get_me
from tgbroadcast.core.config.settings import BOT_TOKEN_RE, BotSettings, Settings
from tgbroadcast.core.config.tokens import BOT_NAME
from tgbroadcast.core.domain.bots import StoredBot
from tgbroadcast.core.domain.errors import (
    BACKEND_UNAVAILABLE,
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from tgbroadcast.core.logs import redact_url
from tgbroadcast.core.store import Store

logger = logging.getLogger(__name__)

CONFIG: Final = "config"
"""``BotInfo.source`` of ``telegram.token`` and ``bots:``."""
API: Final = "api"
"""``BotInfo.source`` of a bot created through the API."""
MIN_RATE: Final = 0.1
MAX_TOKEN_LENGTH: Final = 256
MAX_URL_LENGTH: Final = 2048
INT64_MAX: Final = 2**63 - 1
MISSING_KEY_DETAIL: Final = "server.secret_key is not set: bots cannot be stored"

Visible = Callable[[str], bool]
"""Whether the caller may use (and so see) the bot of this name."""
TokenCheck = Callable[..., Awaitable[BotIdentity]]
"""``get_me(token, api_url=...)``."""


def everyone(_: str) -> bool:
    """Every bot is visible (the CLI, an API token with ``bots: ["*"]``)."""
    return True


@dataclass(frozen=True, slots=True, kw_only=True)
class NewBot:
    """A CreateBot request. ``None`` (or 0 from the proto) for a limit or the URL: the
    ``telegram:`` section's, now and after it changes."""

    name: str
    token: str = field(repr=False)
    rate_limit: float | None = None
    paid_rate_limit: float | None = None
    api_url: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BotInfo:
    """A bot as the API shows it: never its token."""

    name: str
    bot_id: int
    username: str
    """As ``getMe`` answered it at creation; empty for a configured bot."""
    rate_limit: float
    paid_rate_limit: float
    api_url: str
    source: str
    """:data:`CONFIG` or :data:`API`."""
    created_at: datetime | None
    """When it was stored; None for a configured bot."""


class BotService:
    """See the module's docstring. ``check_token`` is Telegram's ``getMe``
    (:func:`.telegram.get_me`)."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        directory: BotDirectory,
        check_token: TokenCheck = get_me,
    ) -> None:
        self._settings = settings
        self._store = store
        self._directory = directory
        self._check_token = check_token

    async def create(self, new: NewBot, *, created_by: str, visible: Visible = everyone) -> BotInfo:
        """Check, seal and store the bot (see the module's docstring for the refusals)."""
        new = _checked(new)
        sealer = self._sealer()
        if self._settings.bot(new.name) is not None:
            raise AlreadyExists(f"bot {new.name!r} already exists (configured)")
        if new.token in {bot.token for bot in self._settings.bots}:
            raise AlreadyExists("this token is already the token of a configured bot")
        fingerprint = token_hash(new.token)
        for row in await self._store.list_stored_bots():
            if row.name == new.name:
                raise AlreadyExists(f"bot {new.name!r} already exists")
            if row.token_hash == fingerprint:
                other = repr(row.name) if visible(row.name) else "another bot"
                raise AlreadyExists(f"this token is already the token of {other}")
        api_url = new.api_url or self._settings.telegram.api_url
        identity = await self._check_token(new.token, api_url=api_url)
        if not 0 < identity.bot_id <= INT64_MAX:
            raise InvalidArgument.single("token", "getMe answered a bot id out of range")
        row = StoredBot(
            name=new.name,
            bot_id=identity.bot_id,
            username=identity.username or None,
            token_sealed=sealer.seal(new.token),
            token_hash=fingerprint,
            rate_limit=new.rate_limit,
            paid_rate_limit=new.paid_rate_limit,
            api_url=new.api_url,
            created_at=datetime.now(UTC),
            created_by=created_by,
        )
        await self._store.create_bot(row)
        logger.info("bot created", extra={"bot": new.name, "created_by": created_by})
        await self._refresh()
        return self._stored_info(row)

    async def list(self, *, visible: Visible = everyone) -> list[BotInfo]:
        """The bots ``visible`` admits, configured and stored, by name."""
        found = [self._configured_info(bot) for bot in self._settings.bots if visible(bot.name)]
        found.extend(
            self._stored_info(row)
            for row in await self._store.list_stored_bots()
            if visible(row.name) and self._settings.bot(row.name) is None
        )
        return sorted(found, key=lambda info: info.name)

    async def get(self, name: str, *, visible: Visible = everyone) -> BotInfo:
        """The bot; ``NotFound`` when there is none or ``visible`` does not admit it."""
        if not visible(name):
            raise _not_found(name)
        configured = self._settings.bot(name)
        if configured is not None:
            return self._configured_info(configured)
        try:
            return self._stored_info(await self._store.get_stored_bot(name))
        except NotFound:
            raise _not_found(name) from None

    async def delete(self, name: str, *, visible: Visible = everyone) -> None:
        """Delete a stored bot: ``NotFound``, or ``FailedPrecondition`` for a configured bot
        or one with unfinished broadcasts. Its broadcasts and users stay."""
        if not visible(name):
            raise _not_found(name)
        if self._settings.bot(name) is not None:
            raise FailedPrecondition(
                f"bot {name} is configured in bots:/telegram.token; remove it there",
                state="configured",
                subject="bot",
            )
        try:
            await self._store.delete_stored_bot(name)
        except NotFound:
            raise _not_found(name) from None
        logger.info("bot deleted", extra={"bot": name})
        await self._refresh()

    async def _refresh(self) -> None:
        """This process's directory, after a change that is committed whatever happens here:
        a database gone at this moment is not the request's failure (the next refresh or
        lookup catches up)."""
        try:
            await self._directory.refresh()
        except BACKEND_UNAVAILABLE as exc:
            logger.warning("bot directory not refreshed", extra={"error": type(exc).__name__})

    def _sealer(self) -> Sealer:
        sealer = self._directory.sealer
        if sealer is None:
            raise FailedPrecondition(MISSING_KEY_DETAIL, state="no_secret_key", subject="service")
        return sealer

    @staticmethod
    def _configured_info(bot: BotSettings) -> BotInfo:
        return BotInfo(
            name=bot.name,
            bot_id=bot.bot_id,
            username="",
            rate_limit=bot.rate_limit,
            paid_rate_limit=bot.paid_rate_limit,
            api_url=redact_url(bot.api_url),
            source=CONFIG,
            created_at=None,
        )

    def _stored_info(self, row: StoredBot) -> BotInfo:
        telegram = self._settings.telegram
        return BotInfo(
            name=row.name,
            bot_id=row.bot_id,
            username=row.username or "",
            rate_limit=telegram.rate_limit if row.rate_limit is None else row.rate_limit,
            paid_rate_limit=(
                telegram.paid_rate_limit if row.paid_rate_limit is None else row.paid_rate_limit
            ),
            api_url=redact_url(telegram.api_url if row.api_url is None else row.api_url),
            source=API,
            created_at=row.created_at,
        )


def _not_found(name: str) -> NotFound:
    return NotFound(f"bot {name!r} not found")


def _checked(new: NewBot) -> NewBot:
    """``new`` with its URL without a trailing ``/``; ``InvalidArgument`` naming every bad
    field at once (the token is never echoed)."""
    violations: list[FieldViolation] = []
    if not BOT_NAME.fullmatch(new.name):
        violations.append(FieldViolation("name", "must be 1 to 32 of a-z 0-9 _ -"))
    if (
        len(new.token) > MAX_TOKEN_LENGTH
        or not new.token.isascii()
        or not BOT_TOKEN_RE.fullmatch(new.token)
        or int(new.token.partition(":")[0]) > INT64_MAX
    ):
        violations.append(
            FieldViolation("token", "must look like 123456789:AAE... (from @BotFather)")
        )
    for name, rate in (("rate_limit", new.rate_limit), ("paid_rate_limit", new.paid_rate_limit)):
        if rate is not None and not (math.isfinite(rate) and rate >= MIN_RATE):
            violations.append(
                FieldViolation(name, f"must be at least {MIN_RATE} messages per second")
            )
    api_url = new.api_url.rstrip("/") if new.api_url else None
    if api_url is not None and not _http_url(api_url):
        violations.append(FieldViolation("api_url", "must be an http(s) URL"))
    elif api_url is not None and "@" in urlsplit(api_url).netloc:
        # It would be stored, listed and shown in errors in clear: a secret has no place there.
        violations.append(FieldViolation("api_url", "must not carry a user name or password"))
    if violations:
        raise InvalidArgument(violations)
    return replace(new, api_url=api_url)


def _http_url(url: str) -> bool:
    if len(url) > MAX_URL_LENGTH or not url.isascii() or any(ch.isspace() for ch in url):
        return False
    try:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a bad IPv6 address or port
        return False
