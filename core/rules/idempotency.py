"""Idempotent SendMessage: the request hash behind ``idempotency_key``.

Guarantees:

* A SendMessage with an ``idempotency_key`` is stored with the key and the SHA-256 of a canonical
  form of the *validated* request (:func:`request_hash`). A later request with the same key and the
  same hash gets the broadcast the first one created (``replayed``; nothing is written, nothing is
  uploaded); with another hash it fails with :class:`~tgbroadcast.core.domain.errors.AlreadyExists`
  (ALREADY_EXISTS / 409), and nothing is written.
* Two identical requests racing: the database's unique constraint on the key lets one
  insert win; the other reads the winner's row and answers as a replay.
* "The same request" means the same validated request: every field of
  :class:`~tgbroadcast.core.domain.model.NewBroadcast` (content, audience, ``send_at``, callback,
  ..., including fields added later: the hash walks the whole dataclass tree), and the SHA-256 of
  every uploaded file's bytes (the stored upload names are random, so they are not hashed).
  Spellings that validate to the same value (repeated user ids, ``user_ids`` in another order, a
  ``media_url`` with spaces around it, JSON keys in another order, the same request over REST or
  gRPC) are the same request.
* Keys are 1-255 printable ASCII characters (checked with the rest of the request by
  :func:`~tgbroadcast.core.rules.validation.validate_send`) and never expire.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from tgbroadcast.core.domain.model import NewBroadcast
from tgbroadcast.core.rules.validation import SendRequest


def request_hash(new: NewBroadcast, request: SendRequest) -> str:
    """SHA-256 (hex) of the canonical JSON of ``new`` and of the digests of every uploaded
    file in ``request``."""
    broadcast = dataclasses.asdict(new)
    # The audience is a set: the same ids in another order are the same request (they are
    # still stored and sent in request order).
    broadcast["user_ids"] = sorted(set(new.user_ids))
    if new.max_stars is None:  # as requests hashed before budgets existed
        del broadcast["max_stars"]
    if not new.variants:  # as requests hashed before variants existed
        del broadcast["variants"]
    if not new.track_clicks:  # and before click tracking
        del broadcast["track_clicks"]
    document = {
        "broadcast": _without_unset_entity_fields(_canonical(broadcast)),
        "uploads": [hashlib.sha256(data).hexdigest() for data in _bytes_in(request)],
    }
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


_LATER_ENTITY_FIELDS = ("unix_time", "date_time_format")
"""Fields entities gained after requests were first hashed (Bot API 10.1's ``date_time``)."""


def _without_unset_entity_fields(value: Any) -> Any:
    """``value`` (canonical JSON) with the entities' later fields left out while unset, so
    a request with entities hashes as it did before they existed (a retry across an upgrade
    replays, not conflicts)."""
    if isinstance(value, list):
        return [_without_unset_entity_fields(item) for item in value]
    if not isinstance(value, dict):
        return value
    is_entity = {"type", "offset", "length"} <= value.keys()
    return {
        key: _without_unset_entity_fields(item)
        for key, item in value.items()
        if not (is_entity and key in _LATER_ENTITY_FIELDS and item is None)
    }


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
