"""The result of parsing Telegram's markup — the visible text and its entities — and what
the HTML and MarkdownV2 parsers (:mod:`.html_markup`, :mod:`.markdown_markup`) share to build
it. Offsets and lengths are UTF-16 code units, as the Bot API counts them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final

SPACES: Final = " \t\n\r\f\v"
"""Whitespace in Telegram's markup: ASCII only (a no-break space is text)."""


class FormattingError(ValueError):
    """The markup is malformed; ``str()`` is Telegram's reason (``Unsupported start tag
    "foo" at byte offset 0``), which the Bot API prefixes with ``can't parse entities: ``."""


@dataclass(slots=True)
class Parsed:
    """A text after entities parsing: what Telegram stores, and its entities (Bot API
    MessageEntity objects, offsets in UTF-16 code units)."""

    text: str
    entities: list[dict[str, Any]] = field(default_factory=list)

    @property
    def length(self) -> int:
        """The length Telegram limits (4096 for texts, 1024 for captions)."""
        return utf16_length(self.text)


def utf16_length(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units (an emoji can count 2)."""
    return len(text.encode("utf-16-le")) // 2


class TextBuilder:
    """The visible text and entities, built as the markup is read."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.parts: list[str] = []
        self.offset = 0  # UTF-16 length of the parts
        self.entities: list[dict[str, Any]] = []

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.offset += utf16_length(text)

    def entity(self, kind: str, start: int, **extra: Any) -> None:
        length = self.offset - start
        if length > 0:
            self.entities.append({"type": kind, "offset": start, "length": length, **extra})

    def byte_offset(self, index: int) -> int:
        return len(self.source[:index].encode("utf-8", errors="surrogatepass"))

    def result(self) -> Parsed:
        entities = sorted(self.entities, key=lambda e: (e["offset"], -e["length"]))
        return Parsed("".join(self.parts), entities)


@dataclass(slots=True)
class OpenEntity:
    """Markup opened and not closed yet: its ``name`` (an HTML tag's; MarkdownV2: the kind),
    the entity ``kind``, where its text starts (``start``, a UTF-16 offset), where the markup
    is in the source (``at``, an index) and the entity's ``extra`` fields."""

    name: str
    kind: str
    start: int
    at: int
    extra: dict[str, Any]


def custom_emoji_id(value: str) -> str:
    """A custom emoji identifier as Telegram accepts it: a non-zero 64-bit integer."""
    if not re.fullmatch(r"-?[0-9]+", value) or not 0 < abs(int(value)) < 2**63:
        raise FormattingError("Invalid custom emoji identifier specified")
    return str(int(value))


DATE_TIME_FORMAT: Final = re.compile(r"r|w?[dD]?[tT]?")
"""A ``date_time`` entity's format as Telegram takes it: ``r``, or ``w``, ``d``/``D``,
``t``/``T`` in that order, each optional (empty: its default)."""


def date_time_fields(unix: str, time_format: str) -> dict[str, Any]:
    """A ``date_time`` entity's fields from its ``unix`` and ``format`` arguments."""
    if not re.fullmatch(r"[0-9]{1,10}", unix):
        raise FormattingError("Invalid Unix time specified")
    if not DATE_TIME_FORMAT.fullmatch(time_format):
        raise FormattingError("Invalid date and time format specified")
    fields: dict[str, Any] = {"unix_time": int(unix)}
    if time_format:
        fields["date_time_format"] = time_format
    return fields
