"""Logging for the entry points: structured ``key=value`` lines with every secret redacted.

Only entry points call :func:`configure_logging`; library code just uses
``logging.getLogger(__name__)`` and passes structured fields with ``extra={...}``.

The redaction is a filter on the handler, so it covers every record from every library
(aiohttp and aiogram put the bot token in URLs): ``bot123:SECRET`` becomes ``bot123:***``,
a bare ``123:SECRET`` bot token becomes ``123:***``, and the configured API tokens become
``***``.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable

_BOT_TOKEN = re.compile(r"(\d{3,20}):[A-Za-z0-9_-]{20,}")

# Attributes every LogRecord has; anything else came in through ``extra`` and is a field.
_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with bot tokens and the given secrets masked."""
    text = _BOT_TOKEN.sub(r"\1:***", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class RedactingFilter(logging.Filter):
    """Masks bot tokens and the given secrets in the message, its arguments and its fields."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg = redact(message, self._secrets)
        record.args = None
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, key, redact(value, self._secrets))
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(
                logging.Formatter().formatException(record.exc_info), self._secrets
            )
            record.exc_info = None
        return True


class FieldsFormatter(logging.Formatter):
    """``time level logger message key=value ...``: the ``extra`` fields, one line."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = [
            f"{key}={value}"
            for key, value in record.__dict__.items()
            if key not in _STANDARD_ATTRS and not key.startswith("_")
        ]
        if not fields:
            return line
        head, sep, tail = line.partition("\n")
        return f"{head} {' '.join(fields)}{sep}{tail}"


def configure_logging(*, level: str = "INFO", secrets: Iterable[str] = ()) -> None:
    """Send every record to stderr, formatted with fields and redacted."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(FieldsFormatter())
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiohttp's access log repeats what our own logs say; keep it for debugging only.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
