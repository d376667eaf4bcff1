"""How every ``tgbroadcast`` client command reaches the service: the gRPC address, the API
token and TLS, from flags or the environment, and the exit codes they share.

The address comes from ``--target``, else ``TGBROADCAST_TARGET``, else ``127.0.0.1:50051``.
The API token comes from ``--token``, else ``TGBROADCAST_TOKEN``, else the first of
``TGB_SERVER_API_TOKEN`` (the server's own setting, for a shell that runs both); it is sent in
the call metadata only and never printed. ``--tls`` checks the server's certificate against
the system's roots, ``--ca-file`` against a private CA; ``--cert-file`` and ``--key-file``
present a client certificate (each file may come from ``TGBROADCAST_CA_FILE``,
``TGBROADCAST_CERT_FILE`` and ``TGBROADCAST_KEY_FILE``; any file implies ``--tls``).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

import grpc

from tgbroadcast_client._errors import BroadcastClientError, InvalidArgument
from tgbroadcast_client._requests import channel_credentials

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

DEFAULT_TARGET = "127.0.0.1:50051"
TOKEN_VARIABLES = ("TGBROADCAST_TOKEN", "TGB_SERVER_API_TOKEN")


def token_from(environ: Mapping[str, str]) -> str:
    """The API token of the environment (see the module's docs); empty when none is set."""
    for name in TOKEN_VARIABLES:
        # The server's setting may list several tokens (rotation): any one works.
        token = environ.get(name, "").split(",")[0].strip()
        if token:
            return token
    return ""


def path_from(environ: Mapping[str, str], name: str) -> Path | None:
    value = environ.get(name, "").strip()
    return Path(value) if value else None


def add_connection_arguments(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """``--target``, ``--token``, ``--tls``, ``--ca-file``, ``--cert-file``, ``--key-file``."""
    parser.add_argument(
        "--target",
        default=environ.get("TGBROADCAST_TARGET", DEFAULT_TARGET),
        help=f"the gRPC API, host:port (default: $TGBROADCAST_TARGET or {DEFAULT_TARGET})",
    )
    parser.add_argument(
        "--token",
        default="",
        help="an API token (default: $TGBROADCAST_TOKEN, else $TGB_SERVER_API_TOKEN)",
    )
    tls_help = "(default: ${}; implies --tls)"
    parser.add_argument(
        "--tls", "--secure", action="store_true", help="connect over TLS (the system's roots)"
    )
    parser.add_argument(
        "--ca-file",
        type=Path,
        default=path_from(environ, "TGBROADCAST_CA_FILE"),
        help="PEM CA that signed the server's certificate "
        + tls_help.format("TGBROADCAST_CA_FILE"),
    )
    parser.add_argument(
        "--cert-file",
        type=Path,
        default=path_from(environ, "TGBROADCAST_CERT_FILE"),
        help="PEM client certificate, for mutual TLS " + tls_help.format("TGBROADCAST_CERT_FILE"),
    )
    parser.add_argument(
        "--key-file",
        type=Path,
        default=path_from(environ, "TGBROADCAST_KEY_FILE"),
        help="PEM key of --cert-file " + tls_help.format("TGBROADCAST_KEY_FILE"),
    )


def credentials_of(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    """The TLS credentials the parsed flags ask for (``None``: plaintext). Raises
    ``OSError`` for a file that cannot be read, ``ValueError`` for a certificate without
    its key."""
    return channel_credentials(
        args.tls, None, ca_file=args.ca_file, cert_file=args.cert_file, key_file=args.key_file
    )


def report_error(command: str, exc: BroadcastClientError, stderr: TextIO) -> int:
    """Prints why the service refused or failed a call (every offending field of an
    invalid request); :data:`EXIT_ERROR`."""
    if isinstance(exc, InvalidArgument):
        print(f"{command}: {exc.code.name}: the request is invalid", file=stderr)
        for violation in exc.violations:
            print(f"  {violation.field}: {violation.description}", file=stderr)
        if not exc.violations:
            print(f"  {exc.details}", file=stderr)
    else:
        print(f"{command}: {exc}", file=stderr)
    return EXIT_ERROR
