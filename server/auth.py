"""Bearer-token authentication, the same for gRPC metadata and HTTP headers, and who is calling.

A request that passed authentication runs with a :class:`Caller` in :data:`CALLER` (set by the
REST middleware and the gRPC interceptor): the API token's name and the client's address, for
records ("who did what") and the access log, and what the token was granted (its scopes and
bots, checked against :mod:`tgbroadcast.server.scopes`). Never the token itself.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

from tgbroadcast.core.domain.access import ALL_BOTS, SCOPES


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
