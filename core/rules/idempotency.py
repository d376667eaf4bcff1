"""Idempotent SendMessage, and the request fields that control when a broadcast starts.

Guarantees:

* A SendMessage with an ``idempotency_key`` is stored with the key and the SHA-256 of a
  canonical form of the *validated* request (:func:`request_hash`). A later request with the
  same key and the same hash gets the broadcast the first one created (``replayed``; nothing
  is written, nothing is uploaded); with another hash it fails with
  :class:`~tgbroadcast.core.domain.errors.AlreadyExists` (ALREADY_EXISTS / 409), and nothing is written.
* Two identical requests racing: the database's unique constraint on the key lets one
  insert win; the other reads the winner's row and answers as a replay.
* "The same request" means the same validated request: every field of
  :class:`~tgbroadcast.core.domain.model.NewBroadcast` (content, audience, ``send_at``, callback, ...,
  including fields added later: the hash walks the whole dataclass tree), and the SHA-256 of
  every uploaded file's bytes (the stored upload names are random, so they are not hashed).
  Spellings that validate to the same value (repeated user ids, ``user_ids`` in another
  order, a ``media_url`` with spaces around it, JSON keys in another order, the same
  request over REST or gRPC) are the same request.
* Keys are 1-255 printable ASCII characters and never expire.
* ``send_at``: a time in the future stores the broadcast ``SCHEDULED`` (recipients resolved
  at once) until the :mod:`~tgbroadcast.core.background.scheduler` starts it; a time in the past means now
  (friendlier to clients whose clocks run a little behind than a refusal). It needs a time
  zone.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from tgbroadcast.core.domain.errors import AlreadyExists, FieldViolation, InvalidArgument
from tgbroadcast.core.domain.model import Broadcast, NewBroadcast
from tgbroadcast.core.rules.validation import SendRequest
from tgbroadcast.core.store import Store

MAX_KEY_LENGTH: Final = 255
_EXAMPLE: Final = "2030-01-01T09:00:00Z"


@dataclass(frozen=True, slots=True, kw_only=True)
class Accepted:
    """What SendMessage answers: the broadcast, and whether an earlier request with the same
    idempotency key created it."""

    broadcast: Broadcast
    replayed: bool = False


def validate_with_options(
    request: SendRequest, validate: Callable[[], NewBroadcast]
) -> NewBroadcast:
    """``validate()`` (the content and audience rules) plus ``send_at`` and
    ``idempotency_key``; every violation of both in one :class:`InvalidArgument`."""
    violations = option_violations(request)
    try:
        new = validate()
    except InvalidArgument as exc:
        raise InvalidArgument([*exc.violations, *violations]) from None
    if violations:
        raise InvalidArgument(violations)
    return dataclasses.replace(
        new,
        send_at=None if request.send_at is None else request.send_at.astimezone(UTC),
        idempotency_key=request.idempotency_key or None,
    )


def option_violations(request: SendRequest) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    key = request.idempotency_key
    if key and (len(key) > MAX_KEY_LENGTH or not all(" " <= ch <= "~" for ch in key)):
        violations.append(
            FieldViolation(
                "idempotency_key", f"must be 1-{MAX_KEY_LENGTH} printable ASCII characters"
            )
        )
    if request.send_at is not None and request.send_at.utcoffset() is None:
        violations.append(FieldViolation("send_at", f"needs a time zone (e.g. {_EXAMPLE})"))
    return violations


def parse_timestamp(field: str, text: str) -> datetime:
    """An RFC 3339 timestamp (``2030-01-01T09:00:00Z``, ``...+02:00``), in UTC;
    :class:`InvalidArgument` naming ``field`` for anything else."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        value = None
    if value is None or "T" not in text.upper() or value.utcoffset() is None:
        raise InvalidArgument.single(
            field,
            f"must be an RFC 3339 timestamp with a time zone (e.g. {_EXAMPLE}), not {text!r}",
        )
    return value.astimezone(UTC)


def request_hash(new: NewBroadcast, request: SendRequest) -> str:
    """SHA-256 (hex) of the canonical JSON of ``new`` and of the digests of every uploaded
    file in ``request``."""
    broadcast = dataclasses.asdict(new)
    # The audience is a set: the same ids in another order are the same request (they are
    # still stored and sent in request order).
    broadcast["user_ids"] = sorted(set(new.user_ids))
    document = {
        "broadcast": _canonical(broadcast),
        "uploads": [hashlib.sha256(data).hexdigest() for data in _bytes_in(request)],
    }
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


async def earlier(store: Store, key: str, hashed: str) -> Broadcast | None:
    """The broadcast an earlier request with ``key`` created, if it was this request;
    :class:`AlreadyExists` if it was another one."""
    found = await store.broadcast_by_idempotency_key(key)
    if found is None:
        return None
    broadcast, stored_hash = found
    if stored_hash != hashed:
        raise AlreadyExists(
            f"idempotency key {key!r} was used for broadcast {broadcast.id} with a different "
            "request; use a new key for a new request"
        )
    return broadcast


def _canonical(value: Any) -> Any:
    """JSON-ready: enums by value, datetimes in UTC ISO 8601, bytes by their SHA-256, sets
    sorted, tuples as lists, dataclasses (left by ``asdict`` in containers) as dicts."""
    if isinstance(value, enum.Enum):
        return _canonical(value.value)
    if isinstance(value, datetime):
        return (
            value.astimezone(UTC).isoformat()
            if value.utcoffset() is not None
            else value.isoformat()
        )
    if isinstance(value, bytes | bytearray | memoryview):
        return {"sha256": hashlib.sha256(bytes(value)).hexdigest()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _canonical(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(key): _canonical(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    if isinstance(value, set | frozenset):
        return sorted((_canonical(item) for item in value), key=repr)
    return value


def _bytes_in(value: Any) -> list[bytes]:
    """Every non-empty bytes value anywhere in ``value`` (a dataclass tree), in field order."""
    found: list[bytes] = []
    if isinstance(value, bytes | bytearray | memoryview):
        if value:
            found.append(bytes(value))
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            found.extend(_bytes_in(getattr(value, field.name)))
    elif isinstance(value, dict):
        for item in value.values():
            found.extend(_bytes_in(item))
    elif isinstance(value, list | tuple):
        for item in value:
            found.extend(_bytes_in(item))
    return found
