"""What the formatting parsers share: the errors, the result, the output being built, and how
Telegram counts and orders entities."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from tgbroadcast.simulator.markup import links

PRIORITY: Final = {
    "blockquote": 0,
    "expandable_blockquote": 0,
    "pre": 11,
    "code": 20,
    "text_link": 49,
    "text_mention": 49,
    "bold": 90,
    "italic": 91,
    "underline": 92,
    "strikethrough": 93,
    "spoiler": 94,
    "date_time": 95,
    "custom_emoji": 99,
}


class MarkupError(ValueError):
    """The markup is malformed; ``str()`` is Telegram's reason."""


class UnsupportedParseMode(ValueError):
    """``parse_mode`` is none of Telegram's (``Bad Request: unsupported parse_mode``)."""


@dataclass(frozen=True, slots=True)
class Formatted:
    """A text after entities parsing: what Telegram stores, and its entities."""

    text: str
    entities: list[dict[str, Any]] = field(default_factory=list)


def utf16_length(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units (an emoji may count two)."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8", errors="surrogatepass"))


def units(ch: str) -> int:
    return 2 if ord(ch) > 0xFFFF else 1


def sorted_entities(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Telegram's order: by offset, longer first, then by the type's nesting priority."""
    return sorted(entities, key=lambda e: (e["offset"], -e["length"], PRIORITY.get(e["type"], 50)))


def link_entity(offset: int, length: int, url: str) -> dict[str, Any] | None:
    """A ``text_link`` or ``text_mention`` for ``url``; ``None`` when it is no link."""
    user_id = links.mentioned_user(url)
    if user_id is not None:
        user = {"id": user_id, "is_bot": False, "first_name": "User"}
        return {"type": "text_mention", "offset": offset, "length": length, "user": user}
    checked = links.checked_link(url)
    if checked is None:
        return None
    return {"type": "text_link", "offset": offset, "length": length, "url": checked}


class Output:
    """The visible text and its entities, built as the markup is read."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.chars: list[str] = []
        self.offset = 0
        self.entities: list[dict[str, Any]] = []

    def add(self, ch: str) -> None:
        self.chars.append(ch)
        self.offset += units(ch)

    def at(self, index: int) -> str:
        """The source character at ``index``, ``""`` past the end."""
        return self.source[index] if 0 <= index < len(self.source) else ""

    def byte_offset(self, index: int) -> int:
        return byte_offset(self.source, index)

    def result(self) -> Formatted:
        return Formatted("".join(self.chars), sorted_entities(self.entities))


def is_space(ch: str) -> bool:
    """Telegram's whitespace in markup (ASCII spaces and control characters)."""
    return ch in " \t\n\r\f\v"
