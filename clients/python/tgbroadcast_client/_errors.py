"""The client's errors, in one tree, mapped once from gRPC statuses.

::

    BroadcastClientError     any failed call; ``code`` (grpc.StatusCode) and ``details``
    ├── InvalidArgument      INVALID_ARGUMENT: ``violations`` names every offending field;
    │                        nothing was written
    ├── NotFound             NOT_FOUND: no such broadcast, user or bot (or not the token's)
    ├── FailedPrecondition   FAILED_PRECONDITION: the broadcast's current state does not
    │                        allow the move (the message names the state); a bot with
    │                        unfinished broadcasts or a configured one cannot be deleted;
    │                        no ``server.secret_key`` to store a bot's token with
    ├── AlreadyExists        ALREADY_EXISTS: an idempotency key reused with another request,
    │                        or a bot name (or token) already taken
    ├── Unauthenticated      UNAUTHENTICATED: no API token, or a wrong one
    ├── PermissionDenied     PERMISSION_DENIED: this address is not in the server's
    │                        ``server.allowed_networks``, or the token lacks the scope
    │                        (or may not use the bot) the call needs
    ├── ResourceExhausted    RESOURCE_EXHAUSTED: a limit (requests per second, failed
    │                        authentications, open watch streams, pending recipients);
    │                        ``retry_after`` says when to try again, where it is known
    └── Unavailable          UNAVAILABLE: the service, its database or its queue cannot be
                             reached right now, or it is shutting down; worth retrying

No message here ever contains the API token: it travels only in the call metadata.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import cast

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"
"""The trailing metadata entry carrying the serialized ``google.rpc.Status``."""


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field of a request: ``field`` is its path (``user_ids[3]``)."""

    field: str
    description: str


class BroadcastClientError(Exception):
    """A call failed; ``str()`` is ``"<CODE>: <details>"``."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class InvalidArgument(BroadcastClientError):
    """The request is invalid; ``violations`` lists every offending field."""

    def __init__(
        self, code: grpc.StatusCode, details: str, violations: tuple[FieldViolation, ...]
    ) -> None:
        super().__init__(code, details)
        self.violations = violations


class NotFound(BroadcastClientError):
    """No such broadcast, user or bot, or one the token may not see."""


class FailedPrecondition(BroadcastClientError):
    """The broadcast's current state does not allow the move (cancel, pause, resume), or
    the bot cannot be created or deleted now (``details`` says why)."""


class AlreadyExists(BroadcastClientError):
    """The idempotency key was used before with a different request, or the bot's name or
    token is already taken."""


class Unauthenticated(BroadcastClientError):
    """The API token is missing or wrong."""


class PermissionDenied(BroadcastClientError):
    """The client's address is not one the server serves, or the token lacks the call's scope
    or bot (``details`` names it)."""


class ResourceExhausted(BroadcastClientError):
    """A limit was reached; ``retry_after`` is the seconds to wait (None: not known)."""

    def __init__(self, code: grpc.StatusCode, details: str, retry_after: float | None) -> None:
        super().__init__(code, details)
        self.retry_after = retry_after


class Unavailable(BroadcastClientError):
    """The service (or its database or queue) cannot be reached right now: retry later."""


_BY_CODE: dict[grpc.StatusCode, type[BroadcastClientError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
}


def error_from_rpc(error: grpc.RpcError) -> BroadcastClientError:
    """Our exception for a failed call (the one place gRPC errors are translated): from
    ``grpc.aio.AioRpcError`` (``BroadcastClient``) or the blocking stack's ``grpc.RpcError``,
    which is also its ``grpc.Call`` (``Client``)."""
    code = error.code()
    details = error.details() or code.name.lower().replace("_", " ")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(code, details, _violations(error))
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ResourceExhausted(code, details, _retry_after(error))
    return _BY_CODE.get(code, BroadcastClientError)(code, details)


def _violations(error: grpc.RpcError) -> tuple[FieldViolation, ...]:
    """The ``google.rpc.BadRequest`` field violations in the call's trailing metadata."""
    violations: list[FieldViolation] = []
    for detail in _details(error):
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            violations.extend(
                FieldViolation(v.field, v.description) for v in bad_request.field_violations
            )
    return tuple(violations)


def _retry_after(error: grpc.RpcError) -> float | None:
    """The ``google.rpc.RetryInfo`` delay in seconds, when the server sent one."""
    for detail in _details(error):
        retry = error_details_pb2.RetryInfo()
        if detail.Unpack(retry):
            return retry.retry_delay.ToTimedelta().total_seconds()
    return None


def _details(error: grpc.RpcError) -> Iterator[any_pb2.Any]:
    """The details of the ``google.rpc.Status`` in the call's trailing metadata."""
    # Every stack yields (key, value) pairs here (aio's Metadata, the blocking stack's and
    # grpc_testing's tuples); the stubs type RpcError's as objects with .key and .value.
    pairs = cast("Iterable[tuple[str, str | bytes]]", error.trailing_metadata() or ())
    for key, value in pairs:
        if key != STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:
            continue
        yield from status.details
