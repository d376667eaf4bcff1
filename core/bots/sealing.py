"""Bot tokens sealed at rest: Fernet (AES-128-CBC and HMAC-SHA256, authenticated) with keys
derived from ``server.secret_key``.

Each key text becomes a Fernet key through HKDF-SHA256 (so any text of at least 32
characters will do, and the same text always gives the same key). The first key seals,
every key opens (:class:`~cryptography.fernet.MultiFernet`): a rotation lists the new key
first, re-seals every stored token (``tgbroadcast bots reseal``), then drops the old key.

:func:`token_hash` is a token's SHA-256 fingerprint: it lets the store refuse a token that
another bot already has without opening every row (a bot token carries ~200 random bits,
so its hash reveals nothing a guess could use).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import Final

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_INFO: Final = b"tgbroadcast bot token sealing v1"
"""HKDF's context: keys derived for sealing bot tokens serve nothing else."""


class CannotOpen(Exception):
    """A sealed token that none of the keys opens (a key was dropped too early, or the row
    was not sealed by this service). Carries no part of the sealed text."""


def token_hash(token: str) -> str:
    """The token's SHA-256 as 64 lower-case hex digits."""
    return hashlib.sha256(token.encode()).hexdigest()


def fernet_key(secret: str) -> bytes:
    """The Fernet key (url-safe base64 of 32 bytes) derived from one ``server.secret_key``."""
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(
        secret.encode()
    )
    return base64.urlsafe_b64encode(derived)


class Sealer:
    """Seals with the first of ``secrets``, opens with any of them."""

    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ValueError("a Sealer needs at least one key")
        self._fernet = MultiFernet([Fernet(fernet_key(secret)) for secret in secrets])

    def seal(self, token: str) -> str:
        """``token`` encrypted and authenticated (ASCII text, a new nonce every time)."""
        return self._fernet.encrypt(token.encode()).decode("ascii")

    def open(self, sealed: str) -> str:
        """The token :meth:`seal` sealed; :class:`CannotOpen` if no key opens it."""
        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode()
        except (InvalidToken, UnicodeError):
            raise CannotOpen("no key of server.secret_key opens this token") from None

    def open_or_none(self, sealed: str) -> str | None:
        """:meth:`open`, or None when no key opens it."""
        try:
            return self.open(sealed)
        except CannotOpen:
            return None
