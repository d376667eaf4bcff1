"""How the service reaches NATS: the servers of ``nats.url``, credentials and TLS.

``nats.url`` lists one server or a cluster's, comma-separated; the client connects to any of
them and follows the cluster when a node goes. Credentials and TLS ride in settings, not in
the URL (a URL's user info still works, and is never logged):

* ``creds_file`` — a ``.creds`` file (a user JWT and its NKey seed, as ``nsc`` writes them),
  or a file holding only an NKey seed (``SU...``) for a server with NKey users;
* ``user`` / ``password``;
* ``tls_ca_file`` — the CA that signed the servers' certificates (``tls://`` URLs, or any
  URL once given); ``tls_cert_file`` + ``tls_key_file`` — a client certificate for servers
  that verify clients.

Files are read when connecting (and again on every reconnect by the NATS client for
``.creds``), so a renewed credential is picked up by the next connection.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tgbroadcast.core.domain.errors import ConfigError

_JWT_MARKER = "BEGIN NATS USER JWT"


@dataclass(frozen=True, slots=True, kw_only=True)
class NatsAccess:
    """Authentication and TLS for the NATS connection (all optional)."""

    creds_file: Path | None = None
    user: str = ""
    password: str = field(default="", repr=False)
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None

    def __post_init__(self) -> None:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.password and not self.user:
            raise ValueError("a password needs a user")

    @property
    def uses_tls(self) -> bool:
        return self.tls_ca_file is not None or self.tls_cert_file is not None

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect``; :class:`ConfigError` naming the key of a
        file that cannot be read as what it should be."""
        options: dict[str, Any] = {}
        if self.creds_file is not None:
            try:
                text = self.creds_file.read_text(encoding="utf-8")
            except (OSError, ValueError) as exc:
                raise ConfigError("nats.creds_file", f"cannot be read: {_reason(exc)}") from None
            if _JWT_MARKER in text:
                options["user_credentials"] = str(self.creds_file)
            else:
                options["nkeys_seed"] = str(self.creds_file)
        if self.user:
            options["user"] = self.user
            options["password"] = self.password
        if self.uses_tls:
            options["tls"] = self.ssl_context()
        return options

    def ssl_context(self) -> ssl.SSLContext:
        """Verifies the servers against ``tls_ca_file`` (else the system's CAs) and presents
        the client certificate when one is set."""
        cafile = None if self.tls_ca_file is None else str(self.tls_ca_file)
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                "nats.tls_ca_file", f"cannot be read as PEM certificates: {_reason(exc)}"
            ) from None
        if self.tls_cert_file is not None and self.tls_key_file is not None:
            try:
                context.load_cert_chain(str(self.tls_cert_file), str(self.tls_key_file))
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    "nats.tls_cert_file",
                    f"and nats.tls_key_file cannot be read as a PEM certificate and its key: "
                    f"{_reason(exc)}",
                ) from None
        return context


def _reason(exc: Exception) -> str:
    """What went wrong with a file, without its contents (``[SSL] PEM lib``, ``No such file``)."""
    if isinstance(exc, ssl.SSLError):
        return f"[{exc.library or 'SSL'}] {exc.reason or exc}"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return type(exc).__name__


def split_servers(url: str) -> list[str]:
    """The servers of ``nats.url``: one URL or several, comma-separated."""
    return [server.strip() for server in url.split(",") if server.strip()]


class Repeats:
    """Which occurrences of a repeated message to write: the first, then one per
    :data:`REPEAT_EVERY` seconds with how many were not written since."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, int]] = {}

    def seen(self, text: str, now: float) -> int | None:
        """``None``: do not write it; else how many occurrences were not written before."""
        written, skipped = self._last.get(text, (-REPEAT_EVERY, 0))
        if now - written < REPEAT_EVERY:
            self._last[text] = (written, skipped + 1)
            return None
        if len(self._last) >= 100:  # (errors that never repeat: nothing to hold on to)
            self._last.clear()
        self._last[text] = (now, 0)
        return skipped


REPEAT_EVERY = 60.0
"""Seconds between two writes of the same NATS error (while it keeps coming)."""
