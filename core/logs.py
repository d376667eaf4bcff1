"""Logging for the entry points: one line per record, ``key=value`` text or JSON, with every
secret redacted.

Only entry points call :func:`configure_logging`; library code just uses
``logging.getLogger(__name__)`` and passes structured fields with ``extra={...}``
(``broadcast_id``, ``user_id``, ``job``, ``attempt``, ``error``, ...).

The redaction is a filter on the handler, so it covers every record from every library
(aiohttp and aiogram put the bot token in URLs), whichever the format: the message, its
arguments, every field (a value that is not a string, number or boolean is logged as its
redacted ``str()``), the traceback and the stack. ``bot123:SECRET`` becomes ``bot123:***``,
a bare ``123:SECRET`` bot token becomes ``123:***``, and the given secrets (API tokens, the
NATS password) become ``***``.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

LogFormat = Literal["text", "json"]

_BOT_TOKEN = re.compile(r"(\d{3,20}):[A-Za-z0-9_-]{20,}")

# Attributes every LogRecord has; anything else came in through ``extra`` and is a field.
_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)
_JSON_KEYS = frozenset({"time", "level", "logger", "message", "exception", "stack"})
"""What a JSON line itself says; a field of the same name is written as ``field_<name>``."""


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with bot tokens and the given secrets masked."""
    if ":" in text:  # every bot token has one; most log values none (a search fewer)
        text = _BOT_TOKEN.sub(r"\1:***", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def redact_url(url: str) -> str:
    """The URL without user info (NATS and Bot API URLs may carry a user, password or token)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


_REDACTED = "_redacted_fields"
"""Where :class:`RedactingFilter` leaves a record's fields, redacted, for the formatters
(found once per record, not once more by the formatter), with the record's number of
attributes then: one set since (another filter's field, a formatter's ``message``) has the
fields found again."""


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's ``extra`` fields."""
    kept: tuple[int, dict[str, Any]] | None = record.__dict__.get(_REDACTED)
    if kept is not None and kept[0] == len(record.__dict__):
        return kept[1]
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _STANDARD_ATTRS and not key.startswith("_")
    }


class RedactingFilter(logging.Filter):
    """Masks bot tokens and the given secrets in the message, its arguments, its fields, its
    traceback and its stack."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg = redact(message, self._secrets)
        record.args = None
        fields = {key: self._value(value) for key, value in _fields(record).items()}
        attributes = record.__dict__
        attributes.update(fields)
        attributes[_REDACTED] = (len(attributes) + (_REDACTED not in attributes), fields)
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self._secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self._secrets)
        return True

    def _value(self, value: object) -> object:
        """A field's value, redacted: strings, lists and mappings inside out; finite numbers,
        booleans and None as they are; anything else as its redacted ``str()``."""
        if isinstance(value, str):
            return redact(value, self._secrets)
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)  # JSON has no NaN or infinity
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, list | tuple):
            return [self._value(item) for item in value]
        if isinstance(value, dict):
            return {redact(str(k), self._secrets): self._value(v) for k, v in value.items()}
        return redact(str(value), self._secrets)


class FieldsFormatter(logging.Formatter):
    """``time level logger message key=value ...``: the ``extra`` fields, one line."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        found = _fields(record)  # before the line: formatting it sets attributes
        line = super().format(record)
        fields = [f"{key}={value}" for key, value in found.items()]
        if not fields:
            return line
        head, sep, tail = line.partition("\n")
        return f"{head} {' '.join(fields)}{sep}{tail}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (ISO 8601 in UTC, milliseconds, with its offset),
    ``level``, ``logger``, ``message``, then the ``extra`` fields as they are (numbers stay
    numbers), and ``exception`` / ``stack`` when the record has them."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _fields(record).items():
            entry[f"field_{key}" if key in _JSON_KEYS else key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(
    *, level: str = "INFO", format: LogFormat = "text", secrets: Iterable[str] = ()
) -> None:
    """Send every record to stderr, one line each (``text``: ``key=value`` fields; ``json``:
    JSON objects), redacted."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if format == "json" else FieldsFormatter())
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiohttp's access log repeats what our own (``tgbroadcast.access``) says; keep it for
    # debugging only.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
