"""When a broadcast starts: the ``send_at`` rule and RFC 3339 timestamps.

* ``send_at``: a time in the future stores the broadcast ``SCHEDULED`` (recipients resolved
  at once) until the :mod:`~tgbroadcast.core.background.scheduler` starts it; a time in the
  past means now (friendlier to clients whose clocks run a little behind than a refusal). It
  needs a time zone, and is stored in UTC.
* A timestamp given as text (REST's ``send_at``) is RFC 3339 with a time zone
  (``2030-01-01T09:00:00Z``, ``...+02:00``); anything else is refused naming its field.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from tgbroadcast.core.domain.errors import FieldViolation, InvalidArgument

_EXAMPLE: Final = "2030-01-01T09:00:00Z"


def send_at_violations(send_at: datetime | None) -> list[FieldViolation]:
    """What is wrong with a requested start time (nothing for ``None``: start now)."""
    if send_at is not None and send_at.utcoffset() is None:
        return [FieldViolation("send_at", f"needs a time zone (e.g. {_EXAMPLE})")]
    return []


def start_time(send_at: datetime | None) -> datetime | None:
    """A valid ``send_at`` as stored: in UTC."""
    return None if send_at is None else send_at.astimezone(UTC)


def parse_timestamp(field: str, text: str) -> datetime:
    """An RFC 3339 timestamp (``2030-01-01T09:00:00Z``, ``...+02:00``), in UTC;
    :class:`~tgbroadcast.core.domain.errors.InvalidArgument` naming ``field`` for anything
    else."""
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
