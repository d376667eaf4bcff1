"""TLS and mutual TLS for both listeners, with certificates renewed without a restart.

:class:`ServerCertificates` owns the PEM files named by ``server.tls_cert_file``,
``server.tls_key_file`` and ``server.tls_client_ca_file``. It keeps the last *good* set
(:class:`Loaded`: the bytes, and an :class:`ssl.SSLContext` built from them, which proves the
certificate and the key belong together) and looks at the files again at most once per
``check_interval`` (1 s), and only when a new connection asks: a ``stat`` of three files,
nothing on an idle server and no task to run or stop.

Both listeners ask it on every handshake:

* HTTP (:meth:`ServerCertificates.http_context`): aiohttp is handed one listening
  ``SSLContext`` whose ``sni_callback`` runs during each ClientHello (with or without SNI) and
  points the connection at the current set's context (``SSLObject.context = ...``): the new
  certificate is served from the first handshake after the renewal; open connections keep
  theirs.
* gRPC (:meth:`ServerCertificates.grpc_credentials`): ``grpc.dynamic_ssl_server_credentials``
  calls our fetcher before each handshake; it returns a new
  ``ssl_server_certificate_configuration`` when the set changed, else ``None`` (keep).

A renewal caught half-written (the certificate already replaced, the key not yet, or a file
truncated) does not load: the old set keeps serving, one WARNING names the files, and the
next change of the files is tried again. A set that never loads at start is a
:class:`~tgbroadcast.core.domain.errors.ConfigError`.

With a client CA both listeners require a client certificate it signed (``CERT_REQUIRED`` /
``require_client_authentication``); TLS 1.2 is the oldest version offered.
"""

from __future__ import annotations

import hashlib
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import grpc

from tgbroadcast.core.domain.errors import ConfigError

logger = logging.getLogger(__name__)

CHECK_INTERVAL = 1.0
"""Seconds between two looks at the files (each a ``stat``; a read only when they changed)."""


class _Unloadable(Exception):
    """The files on disk do not make a usable set (yet): the reason, without key material."""

    def __init__(self, reason: str, field: str = "server.tls_cert_file") -> None:
        super().__init__(reason)
        self.field = field


@dataclass(frozen=True, slots=True, kw_only=True)
class Loaded:
    """One consistent set of PEM files, checked by building a server context from it."""

    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None
    context: ssl.SSLContext
    fingerprint: str
    """SHA-256 of the three files' bytes: tells one set from the next."""


Stamp = tuple[tuple[int, int, int], ...]


class ServerCertificates:
    """The server's certificate, key and client CA, re-read when the files change."""

    def __init__(
        self,
        cert_file: Path,
        key_file: Path,
        client_ca_file: Path | None = None,
        *,
        check_interval: float = CHECK_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.client_ca_file = client_ca_file
        self._interval = check_interval
        self._clock = clock
        # gRPC calls the fetcher from its own threads, aiohttp from the event loop.
        self._lock = threading.Lock()
        self._stamp = self._stat()
        try:
            self._current = self._load()
        except _Unloadable as exc:
            raise ConfigError(exc.field, str(exc)) from None
        self._checked = clock()

    @property
    def mutual(self) -> bool:
        """Whether clients must present a certificate (a client CA is configured)."""
        return self.client_ca_file is not None

    @property
    def _files(self) -> tuple[Path, ...]:
        return tuple(p for p in (self.cert_file, self.key_file, self.client_ca_file) if p)

    def current(self) -> Loaded:
        """The set to serve now: the files are looked at again when ``check_interval`` has
        passed, and loaded again when they changed; a set that does not load is skipped."""
        with self._lock:
            now = self._clock()
            if now - self._checked < self._interval:
                return self._current
            self._checked = now
            stamp = self._stat()
            if stamp == self._stamp:
                return self._current
            self._stamp = stamp
            try:
                loaded = self._load()
            except _Unloadable as exc:
                logger.warning(
                    "TLS files changed but do not load; still serving the previous certificate",
                    extra={"files": [str(p) for p in self._files], "reason": str(exc)},
                )
                return self._current
            if loaded.fingerprint != self._current.fingerprint:
                self._current = loaded
                logger.info("TLS certificate reloaded", extra={"cert_file": str(self.cert_file)})
            return self._current

    def http_context(self) -> ssl.SSLContext:
        """The context for aiohttp's listener: each handshake is moved to the current set."""
        listening = self._build(self._current.client_ca)
        listening.sni_callback = self._on_client_hello
        return listening

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """Credentials for ``add_secure_port`` that follow the files the same way."""
        first = self._current
        served = [first.fingerprint]

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            loaded = self.current()
            if loaded.fingerprint == served[0]:
                return None
            served[0] = loaded.fingerprint
            return _grpc_configuration(loaded)

        # grpc documents ``None`` as "keep the current one"; its stub only allows a config.
        fetcher = cast(Callable[[], grpc.ServerCertificateConfiguration], fetch)
        return grpc.dynamic_ssl_server_credentials(
            _grpc_configuration(first), fetcher, require_client_authentication=self.mutual
        )

    def _on_client_hello(
        self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> None:
        loaded = self.current()
        if connection.context is not loaded.context:
            connection.context = loaded.context

    def _stat(self) -> Stamp:
        stamps = []
        for path in self._files:
            try:
                st = os.stat(path)
            except OSError:
                stamps.append((-1, -1, -1))
            else:
                stamps.append((st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(stamps)

    def _load(self) -> Loaded:
        """Reads and checks the files. The chain and key are loaded by path (OpenSSL reads
        no PEM from memory) between two reads of their bytes: equal bytes mean the context
        holds what gRPC is given."""
        cert, key, ca = before = self._read()
        try:
            context = self._build(ca)
        except (ssl.SSLError, OSError, UnicodeDecodeError, ValueError) as exc:
            raise _Unloadable(_reason(exc)) from None
        if self._read() != before:
            raise _Unloadable("the files changed while being read")
        digest = hashlib.sha256(b"\0".join((cert, key, ca or b""))).hexdigest()
        return Loaded(
            cert_chain=cert, private_key=key, client_ca=ca, context=context, fingerprint=digest
        )

    def _read(self) -> tuple[bytes, bytes, bytes | None]:
        try:
            cert = self.cert_file.read_bytes()
            key = self.key_file.read_bytes()
            ca = None if self.client_ca_file is None else self.client_ca_file.read_bytes()
        except OSError as exc:
            raise _Unloadable(_reason(exc)) from None
        if not cert.strip() or not key.strip() or (ca is not None and not ca.strip()):
            raise _Unloadable("a file is empty")
        return cert, key, ca

    def _build(self, client_ca: bytes | None) -> ssl.SSLContext:
        """A server context over the files: TLS 1.2+, a client certificate required (and
        checked against ``client_ca``) when there is one."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_file, self.key_file, password=self._no_passphrase)
        if client_ca is None:
            context.verify_mode = ssl.CERT_NONE
            return context
        try:
            context.load_verify_locations(cadata=client_ca.decode("ascii"))
        except (ssl.SSLError, OSError, UnicodeDecodeError, ValueError) as exc:
            raise _Unloadable(_reason(exc), "server.tls_client_ca_file") from None
        context.verify_mode = ssl.CERT_REQUIRED
        return context

    def _no_passphrase(self) -> str:
        """Called by OpenSSL for an encrypted key instead of prompting on the terminal (which
        would block start-up, or the event loop inside a handshake on renewal)."""
        raise _Unloadable(
            f"the private key {self.key_file} is encrypted; give an unencrypted key "
            "(readable by the service only)",
            "server.tls_key_file",
        )


def _grpc_configuration(loaded: Loaded) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(loaded.private_key, loaded.cert_chain)], root_certificates=loaded.client_ca
    )


def _reason(exc: BaseException) -> str:
    """What went wrong, in words: OpenSSL's reason (``KEY_VALUES_MISMATCH``) or the OS's."""
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    if isinstance(exc, OSError):
        what = exc.strerror or exc.__class__.__name__
        return what if exc.filename is None else f"{what}: {exc.filename}"
    return exc.__class__.__name__
