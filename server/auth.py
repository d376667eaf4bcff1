"""Bearer-token authentication, the same for gRPC metadata and HTTP headers, and who is calling.

A request that passed authentication runs with a :class:`Caller` in :data:`CALLER` (set by the
REST middleware and the gRPC interceptor): the API token's name and the client's address, for
records ("who did what") and the access log. Never the token itself.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Caller:
    token_name: str
    """The API token's configured name (or its fingerprint): never the token."""
    address: str
    """The client's IP address (``X-Forwarded-For`` only from a trusted proxy)."""


CALLER: ContextVar[Caller | None] = ContextVar("tgbroadcast_caller", default=None)


def current_caller_name() -> str:
    """The authenticated token's name for this request; empty outside one."""
    caller = CALLER.get()
    return "" if caller is None else caller.token_name


class TokenCheck:
    """Accepts ``Bearer <token>`` for any configured ``(name, token)`` (several allow rotation).

    Every configured token is compared, in constant time each, so the answer's timing says
    nothing about which token or how much of it matched.
    """

    def __init__(self, tokens: Iterable[tuple[str, str]]) -> None:
        self._tokens = tuple((name, token.encode()) for name, token in tokens)
        if not self._tokens:
            raise ValueError("at least one API token is required")

    def identify(self, authorization: str | bytes | None) -> str | None:
        """The name of the token ``authorization`` carries; None when it carries none of ours
        (absent, another scheme, not ASCII, binary, or simply wrong)."""
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
        found: str | None = None
        for name, token in self._tokens:
            if hmac.compare_digest(given, token):
                found = name
        return found
