"""Telegram's formatting, parsed as the Bot API server parses it (tdlib's HTML and MarkdownV2
parsers): the visible text, its entities, or the error Telegram would answer.

Telegram counts a message's length *after* entities parsing (``<b>hi</b>`` is 2 characters),
and refuses malformed markup with ``Bad Request: can't parse entities: <reason>``. Both are
decided here, before anything is stored, so a broadcast never fails at its first recipient
for markup the service could have checked. :func:`escape` makes any value literal text in a
parse mode (personalization inserts user names with it).

This module is the surface the rest of the code imports; the parsers are in
:mod:`.html_markup` and :mod:`.markdown_markup`, what they produce in :mod:`.parsed_text`.
Pure functions, no I/O. The simulator answers from its own parser
(``tgbroadcast.simulator.markup``); tests/test_simulator_formatting.py compares the two.
"""

from __future__ import annotations

import html
from typing import Final

from tgbroadcast.core.rules.html_markup import HtmlParser
from tgbroadcast.core.rules.markdown_markup import (
    MARKDOWN_V2_RESERVED,
    MarkdownV2Parser,
    legacy_markdown,
)
from tgbroadcast.core.rules.parsed_text import FormattingError, Parsed, utf16_length

__all__ = [
    "HTML",
    "MARKDOWN",
    "MARKDOWN_V2",
    "MARKDOWN_V2_RESERVED",
    "FormattingError",
    "Parsed",
    "escape",
    "normalize_mode",
    "parse",
    "utf16_length",
]

HTML: Final = "html"
MARKDOWN_V2: Final = "markdownv2"
MARKDOWN: Final = "markdown"


def normalize_mode(parse_mode: str | None) -> str | None:
    """The Bot API ``parse_mode`` in lower case without ``_``; ``None`` for plain text."""
    if not parse_mode:
        return None
    return parse_mode.lower().replace("_", "")


def parse(text: str, parse_mode: str | None) -> Parsed:
    """``text`` after entities parsing in ``parse_mode`` (``HTML``, ``MarkdownV2``,
    ``Markdown``, case-insensitive; empty or ``None``: plain). Raises
    :class:`FormattingError`, or ``ValueError("unsupported parse_mode")`` for another mode."""
    mode = normalize_mode(parse_mode)
    if mode is None:
        return Parsed(text)
    if mode == HTML:
        return HtmlParser(text).parse()
    if mode == MARKDOWN_V2:
        return MarkdownV2Parser(text).parse()
    if mode == MARKDOWN:
        return legacy_markdown(text)
    raise ValueError("unsupported parse_mode")


def escape(value: str, parse_mode: str | None) -> str:
    """``value`` as literal text in ``parse_mode``: ``parse(escape(v, m), m).text == v``.

    Safe in every context a template can put it: HTML text and quoted attribute values
    (``&``, ``<``, ``>``, ``"`` and ``'`` become entities Telegram decodes, so a name cannot
    end an ``href="..."``); MarkdownV2 text and the ``(...)`` URL of an inline link (Telegram
    requires ``)`` and ``\\`` escaped there and reads any other ``\\x`` as ``x``, so escaping
    every reserved character keeps the URL exactly the value).
    """
    mode = normalize_mode(parse_mode)
    if mode == HTML:
        return html.escape(value, quote=True)
    if mode == MARKDOWN_V2:
        return "".join(
            "\\" + ch if ch in MARKDOWN_V2_RESERVED or ch == "\\" else ch for ch in value
        )
    return value
