"""Telegram's formatting options (``parse_mode`` HTML, MarkdownV2 and legacy Markdown), parsed
as the Bot API server parses them, independently of the service's own parser.

:func:`parse_markup` returns the text Telegram stores and its entities (Bot API
``MessageEntity`` objects, offsets and lengths in UTF-16 code units, sorted as Telegram sorts
them), or raises :class:`MarkupError` whose ``str()`` is Telegram's reason — the Bot API
answers ``Bad Request: can't parse entities: <reason>``. Byte offsets in reasons count UTF-8
bytes of the original text, as Telegram's do.

Written from the Bot API's "Formatting options" and the official server's rules: an
unsupported tag, an unescaped reserved character or an unclosed entity is refused; an entity
with no text is dropped; a link Telegram cannot open is dropped, not refused.

May import: the standard library only.
"""

from __future__ import annotations

from tgbroadcast.simulator.markup._text import (
    Formatted,
    MarkupError,
    UnsupportedParseMode,
    utf16_length,
)
from tgbroadcast.simulator.markup.html import HTML_TAGS, HtmlParser
from tgbroadcast.simulator.markup.markdown import (
    MARKDOWN_V2_RESERVED,
    MarkdownParser,
    MarkdownV2Parser,
)

__all__ = [
    "HTML_TAGS",
    "MARKDOWN_V2_RESERVED",
    "Formatted",
    "MarkupError",
    "UnsupportedParseMode",
    "parse_markup",
    "utf16_length",
]


def parse_markup(text: str, parse_mode: str | None) -> Formatted:
    """``text`` after entities parsing in ``parse_mode`` (``HTML``, ``MarkdownV2`` or
    ``Markdown``, case-insensitive; empty or ``None``: plain text)."""
    if not parse_mode:
        return Formatted(text)
    mode = parse_mode.lower()
    if mode == "html":
        return HtmlParser(text).parse()
    if mode == "markdownv2":
        return MarkdownV2Parser(text).parse()
    if mode == "markdown":
        return MarkdownParser(text).parse()
    raise UnsupportedParseMode(parse_mode)
