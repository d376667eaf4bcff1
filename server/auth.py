"""Bearer-token authentication, the same for gRPC metadata and HTTP headers, and who is calling.

A request that passed authentication runs with a :class:`Caller` in :data:`CALLER` (set by the
REST middleware and the gRPC interceptor): the API token's name and the client's address, for
records ("who did what") and the access log, and what the token was granted (its scopes and
bots, checked against :mod:`tgbroadcast.server.scopes`). Never the token itself.

Which bot a request acts for is decided here only (:meth:`Caller.bot_for`, :func:`bot_for`):
the bot it names, else the token's only bot, else ``default``; a bot the token may not use is
:class:`PermissionDenied`. Which broadcasts a token may see is :meth:`Caller.visible_bots`
(the service hides the others as if they did not exist).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Final, Protocol

from tgbroadcast.core.domain.access import ALL_BOTS, DEFAULT_BOT, SCOPES
from tgbroadcast.core.domain.errors import ApiError

SHOWN_NAME: Final = 64
"""Characters of a requested bot name an error repeats."""


class PermissionDenied(ApiError):
    """PERMISSION_DENIED / 403: the token may not do this (here: use this bot)."""


@dataclass(frozen=True, slots=True)
class Grant:
    """What one API token may do: its name, its scopes, the bots it may use (``*``: all)."""

    name: str
    scopes: frozenset[str] = SCOPES
    bots: tuple[str, ...] = (ALL_BOTS,)


@dataclass(frozen=True, slots=True)
class Caller:
    token_name: str
    """The API token's configured name (or its fingerprint): never the token."""
    address: str
    """The client's IP address (``X-Forwarded-For`` only from a trusted proxy)."""
    scopes: frozenset[str] = SCOPES
    """What the token may do (:mod:`tgbroadcast.core.domain.access`)."""
    bots: tuple[str, ...] = (ALL_BOTS,)
    """The bots the token may use; ``*``: every bot."""

    def may_use(self, bot: str) -> bool:
        return ALL_BOTS in self.bots or bot in self.bots

    def bot_for(self, requested: str) -> str:
        """The bot a request acts for: ``requested``; when empty, the token's only bot if
        its ``bots`` is exactly one name, else ``default``. :class:`PermissionDenied` naming
        the token and the bot when the token may not use it. Whether the bot exists is the
        service's question."""
        bot = requested or (
            self.bots[0] if self.bots != (ALL_BOTS,) and len(self.bots) == 1 else DEFAULT_BOT
        )
        if not self.may_use(bot):
            raise PermissionDenied(
                f"API token {self.token_name} may not use bot {bot[:SHOWN_NAME]!r}"
            )
        return bot

    @property
    def visible_bots(self) -> frozenset[str] | None:
        """The bots whose broadcasts the token may see; None: every bot."""
        return None if ALL_BOTS in self.bots else frozenset(self.bots)


class ConfiguredToken(Protocol):
    """A configured API token (:class:`tgbroadcast.core.config.settings.ApiToken`)."""

    @property
    def name(self) -> str: ...
    @property
    def token(self) -> str: ...
    @property
    def scopes(self) -> frozenset[str]: ...
    @property
    def bots(self) -> tuple[str, ...]: ...


CALLER: ContextVar[Caller | None] = ContextVar("tgbroadcast_caller", default=None)


def current_caller_name() -> str:
    """The authenticated token's name for this request; empty outside one."""
    caller = CALLER.get()
    return "" if caller is None else caller.token_name


def bot_for(requested: str) -> str:
    """:meth:`Caller.bot_for` for this request's caller; without one (an app with no
    token check: a test's), ``requested`` or ``default``."""
    caller = CALLER.get()
    if caller is None:
        return requested or DEFAULT_BOT
    return caller.bot_for(requested)


def visible_bots() -> frozenset[str] | None:
    """:attr:`Caller.visible_bots` for this request's caller; None (every bot) without one."""
    caller = CALLER.get()
    return None if caller is None else caller.visible_bots


class TokenCheck:
    """Accepts ``Bearer <token>`` for any configured token (several allow rotation): a
    configured token with its grants, or ``(name, token)`` with every scope on every bot.

    Every configured token is compared, in constant time each, so the answer's timing says
    nothing about which token or how much of it matched.
    """

    def __init__(self, tokens: Iterable[ConfiguredToken | tuple[str, str]]) -> None:
        self._tokens = tuple(_grant(token) for token in tokens)
        if not self._tokens:
            raise ValueError("at least one API token is required")

    def identify(self, authorization: str | bytes | None) -> Grant | None:
        """The grants of the token ``authorization`` carries; None when it carries none of
        ours (absent, another scheme, not ASCII, binary, or simply wrong)."""
        if not authorization:
            return None
        if isinstance(authorization, bytes):
            try:
                authorization = authorization.decode("ascii")
            except UnicodeDecodeError:
                return None
        if not authorization.isascii() or not authorization.isprintable():
            return None
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return None
        given = credentials.strip().encode()
        found: Grant | None = None
        for grant, token in self._tokens:
            if hmac.compare_digest(given, token):
                found = grant
        return found


def _grant(token: ConfiguredToken | tuple[str, str]) -> tuple[Grant, bytes]:
    if isinstance(token, tuple):
        name, secret = token
        return Grant(name), secret.encode()
    return Grant(token.name, token.scopes, token.bots), token.token.encode()
