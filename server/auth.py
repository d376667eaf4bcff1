"""Bearer-token authentication, the same for gRPC metadata and HTTP headers."""

from __future__ import annotations

import hmac
from collections.abc import Iterable


class TokenCheck:
    """Accepts ``Bearer <token>`` for any configured token (several allow rotation).

    Every configured token is compared, in constant time each, so the answer's timing says
    nothing about which token or how much of it matched.
    """

    def __init__(self, tokens: Iterable[str]) -> None:
        self._tokens = tuple(token.encode() for token in tokens)
        if not self._tokens:
            raise ValueError("at least one API token is required")

    def accepts(self, authorization: str | None) -> bool:
        if not authorization:
            return False
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        given = credentials.strip().encode()
        matched = False
        for token in self._tokens:
            matched |= hmac.compare_digest(given, token)
        return matched
