"""Telegram's formatting, parsed as the Bot API server parses it (tdlib's HTML and MarkdownV2
parsers): the visible text, its entities, or the error Telegram would answer.

Telegram counts a message's length *after* entities parsing (``<b>hi</b>`` is 2 characters),
and refuses malformed markup with ``Bad Request: can't parse entities: <reason>``. Both are
decided here, before anything is stored, so a broadcast never fails at its first recipient
for markup the service could have checked. :func:`escape` makes any value literal text in a
parse mode (personalization inserts user names with it).

Pure functions, no I/O; the simulator uses the same parser to answer like Telegram.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any, Final

HTML: Final = "html"
MARKDOWN_V2: Final = "markdownv2"
MARKDOWN: Final = "markdown"

MARKDOWN_V2_RESERVED: Final = frozenset("_*[]()~`>#+-=|{}.!")
"""Characters MarkdownV2 refuses unescaped outside markup."""

_HTML_TAGS: Final = {
    "a": "text_link",
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "span": "spoiler",
    "tg-spoiler": "spoiler",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
    "tg-time": "date_time",
}
_HTML_ENTITIES: Final = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_MD_NAMES: Final = {
    "bold": "Bold",
    "italic": "Italic",
    "underline": "Underline",
    "strikethrough": "Strikethrough",
    "spoiler": "Spoiler",
    "text_link": "TextUrl",
    "custom_emoji": "CustomEmoji",
    "code": "Code",
    "pre": "Pre",
}


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
    return len(text.encode("utf-16-le")) // 2


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
        return _Html(text).parse()
    if mode == MARKDOWN_V2:
        return _MarkdownV2(text).parse()
    if mode == MARKDOWN:
        return _legacy_markdown(text)
    raise ValueError("unsupported parse_mode")


def escape(value: str, parse_mode: str | None) -> str:
    """``value`` as literal text in ``parse_mode``: ``parse(escape(v, m), m).text == v``."""
    mode = normalize_mode(parse_mode)
    if mode == HTML:
        return html.escape(value, quote=False)
    if mode == MARKDOWN_V2:
        return "".join(
            "\\" + ch if ch in MARKDOWN_V2_RESERVED or ch == "\\" else ch for ch in value
        )
    return value


class _Builder:
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
class _Open:
    name: str
    kind: str
    start: int
    at: int
    extra: dict[str, Any]


class _Html(_Builder):
    def parse(self) -> Parsed:
        text = self.source
        n = len(text)
        stack: list[_Open] = []
        i = 0
        while i < n:
            ch = text[i]
            if ch == "&":
                decoded, after = _html_entity(text, i)
                self.add(decoded)
                i = after
                continue
            if ch != "<":
                j = i
                while j < n and text[j] not in "<&":
                    j += 1
                self.add(text[i:j])
                i = j
                continue
            begin = i
            i += 1
            if i >= n:
                raise FormattingError(
                    f"Unclosed start tag at byte offset {self.byte_offset(begin)}"
                )
            if text[i] != "/":
                j = i
                while j < n and not text[j].isspace() and text[j] != ">":
                    j += 1
                if j >= n:
                    raise FormattingError(
                        f"Unclosed start tag at byte offset {self.byte_offset(begin)}"
                    )
                name = text[i:j].lower()
                kind = _HTML_TAGS.get(name)
                if kind is None:
                    raise FormattingError(
                        f'Unsupported start tag "{name}" at byte offset {self.byte_offset(begin)}'
                    )
                attrs, i = self._attributes(name, j, begin)
                extra: dict[str, Any] = {}
                if kind == "text_link" and attrs.get("href"):
                    extra["url"] = attrs["href"]
                elif kind == "pre" and attrs.get("class"):
                    extra["language"] = attrs["class"].removeprefix("language-")
                elif kind == "custom_emoji" and "emoji-id" in attrs:
                    extra["custom_emoji_id"] = attrs["emoji-id"]
                elif kind == "blockquote" and "expandable" in attrs:
                    kind = "expandable_blockquote"
                stack.append(_Open(name, kind, self.offset, begin, extra))
                continue
            j = text.find(">", i)
            if j < 0:
                raise FormattingError(f"Unclosed end tag at byte offset {self.byte_offset(begin)}")
            name = text[i + 1 : j].strip().lower()
            if not stack:
                raise FormattingError(
                    f"Unexpected end tag at byte offset {self.byte_offset(begin)}"
                )
            top = stack[-1]
            if name != top.name:
                raise FormattingError(
                    f"Unmatched end tag at byte offset {self.byte_offset(begin)}, "
                    f'expected "</{top.name}>", found "</{name}>"'
                )
            stack.pop()
            if top.kind == "text_link" and "url" not in top.extra:
                pass  # <a> without href: plain text, as on Telegram
            else:
                self.entity(top.kind, top.start, **top.extra)
            i = j + 1
        if stack:
            raise FormattingError(
                f'Can\'t find end tag corresponding to start tag "{stack[-1].name}"'
            )
        return self.result()

    def _attributes(self, name: str, i: int, begin: int) -> tuple[dict[str, str], int]:
        """Attributes up to the tag's ``>``; returns them and the index after ``>``."""
        text = self.source
        n = len(text)
        attrs: dict[str, str] = {}
        while True:
            while i < n and text[i].isspace():
                i += 1
            if i >= n:
                raise FormattingError(
                    f"Unclosed start tag at byte offset {self.byte_offset(begin)}"
                )
            if text[i] == ">":
                return attrs, i + 1
            j = i
            while j < n and (text[j].isalnum() or text[j] in "-_"):
                j += 1
            if j == i:
                raise FormattingError(
                    f'Empty attribute name in the tag "{name}" at byte offset '
                    f"{self.byte_offset(begin)}"
                )
            attribute = text[i:j].lower()
            i = j
            while i < n and text[i].isspace():
                i += 1
            if i < n and text[i] == "=":
                i += 1
                while i < n and text[i].isspace():
                    i += 1
                if i >= n:
                    raise FormattingError(
                        f"Unclosed start tag at byte offset {self.byte_offset(begin)}"
                    )
                if text[i] in "\"'":
                    quote = text[i]
                    end = text.find(quote, i + 1)
                    if end < 0:
                        raise FormattingError(
                            f"Unclosed start tag at byte offset {self.byte_offset(begin)}"
                        )
                    raw = text[i + 1 : end]
                    i = end + 1
                else:
                    j = i
                    while j < n and not text[j].isspace() and text[j] != ">":
                        j += 1
                    raw = text[i:j]
                    i = j
                attrs[attribute] = _decode_html(raw)
            else:
                attrs[attribute] = ""


def _html_entity(text: str, i: int) -> tuple[str, int]:
    """The character an ``&...;`` at ``i`` stands for (a lone ``&`` stays literal)."""
    end = text.find(";", i + 1, i + 12)
    if end < 0:
        return "&", i + 1
    name = text[i + 1 : end]
    if name in _HTML_ENTITIES:
        return _HTML_ENTITIES[name], end + 1
    if name.startswith("#"):
        digits = name[1:]
        try:
            code = int(digits[1:], 16) if digits[:1] in ("x", "X") else int(digits, 10)
        except ValueError:
            return "&", i + 1
        if 0 < code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF:
            return chr(code), end + 1
    return "&", i + 1


def _decode_html(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "&":
            decoded, i = _html_entity(text, i)
            out.append(decoded)
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


class _MarkdownV2(_Builder):
    def parse(self) -> Parsed:
        text = self.source
        n = len(text)
        stack: list[_Open] = []
        i = 0
        while i < n:
            ch = text[i]
            nxt = text[i + 1] if i + 1 < n else ""
            if ch == "\\" and nxt and 0 < ord(nxt) <= 126:
                self.add(nxt)
                i += 2
                continue
            top = stack[-1] if stack else None
            if top is not None and top.kind in ("code", "pre"):
                if top.kind == "code" and ch == "`":
                    stack.pop()
                    self.entity("code", top.start)
                    i += 1
                elif top.kind == "pre" and text.startswith("```", i):
                    stack.pop()
                    self.entity("pre", top.start, **top.extra)
                    i += 3
                else:
                    self.add(ch)
                    i += 1
                continue
            if top is not None and self._closes(top, ch, nxt):
                stack.pop()
                i += 2 if top.kind in ("underline", "spoiler") else 1
                if top.kind in ("text_link", "custom_emoji"):
                    url, i = self._url(i, top)
                    if top.kind == "text_link":
                        if url:
                            self.entity("text_link", top.start, url=url)
                    else:
                        self.entity("custom_emoji", top.start, custom_emoji_id=url)
                else:
                    self.entity(top.kind, top.start)
                continue
            if ch == ">" and (i == 0 or text[i - 1] == "\n"):
                i += 1  # a blockquote line's marker
                continue
            opened = self._opening(ch, nxt, text, i)
            if opened is not None:
                kind, width, extra = opened
                stack.append(_Open(kind, kind, self.offset, i, extra))
                i += width
                if kind == "pre":
                    i = self._pre_start(i, stack[-1])
                continue
            if ch in MARKDOWN_V2_RESERVED:
                raise FormattingError(
                    f"Character '{ch}' is reserved and must be escaped with the preceding '\\'"
                )
            self.add(ch)
            i += 1
        if stack:
            top = stack[-1]
            raise FormattingError(
                f"Can't find end of {_MD_NAMES[top.kind]} entity at byte offset "
                f"{self.byte_offset(top.at)}"
            )
        return self.result()

    @staticmethod
    def _closes(top: _Open, ch: str, nxt: str) -> bool:
        match top.kind:
            case "bold":
                return ch == "*"
            case "italic":
                return ch == "_" and nxt != "_"
            case "underline":
                return ch == "_" and nxt == "_"
            case "strikethrough":
                return ch == "~"
            case "spoiler":
                return ch == "|" and nxt == "|"
            case "text_link" | "custom_emoji":
                return ch == "]"
        return False

    @staticmethod
    def _opening(ch: str, nxt: str, text: str, i: int) -> tuple[str, int, dict[str, Any]] | None:
        match ch:
            case "_":
                return ("underline", 2, {}) if nxt == "_" else ("italic", 1, {})
            case "*":
                return "bold", 1, {}
            case "~":
                return "strikethrough", 1, {}
            case "|" if nxt == "|":
                return "spoiler", 2, {}
            case "[":
                return "text_link", 1, {}
            case "!" if nxt == "[":
                return "custom_emoji", 2, {}
            case "`":
                if text.startswith("```", i):
                    return "pre", 3, {}
                return "code", 1, {}
        return None

    def _pre_start(self, i: int, opened: _Open) -> int:
        """After an opening ```: an optional language up to the first space or newline."""
        text = self.source
        end = i
        while end < len(text) and not text[end].isspace() and text[end] != "`":
            end += 1
        if end != i and end < len(text) and text[end] != "`":
            opened.extra["language"] = text[i:end]
            i = end
        if i < len(text) and text[i] in "\r\n":
            i += 1
        return i

    def _url(self, i: int, opened: _Open) -> tuple[str, int]:
        """The ``(url)`` after a link's ``]``; escapes allowed, ``)`` ends it."""
        text = self.source
        if i >= len(text) or text[i] != "(":
            if opened.kind == "custom_emoji":
                raise FormattingError("Custom emoji entity must contain a tg://emoji URL")
            return "", i
        i += 1
        url: list[str] = []
        while i < len(text) and text[i] != ")":
            if text[i] == "\\" and i + 1 < len(text) and 0 < ord(text[i + 1]) <= 126:
                url.append(text[i + 1])
                i += 2
            else:
                url.append(text[i])
                i += 1
        if i >= len(text):
            raise FormattingError(
                f"Can't find end of a URL at byte offset {self.byte_offset(opened.at)}"
            )
        value = "".join(url)
        if opened.kind == "custom_emoji":
            prefix = "tg://emoji?id="
            if not value.startswith(prefix) or not value[len(prefix) :].isdigit():
                raise FormattingError("Custom emoji URL must have an emoji identifier")
            value = value[len(prefix) :]
        return value, i + 1


def _legacy_markdown(text: str) -> Parsed:
    """Legacy Markdown (not offered by the service; accepted by Telegram): markup dropped."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in "_*`[":
            out.append(text[i + 1])
            i += 2
            continue
        if ch in "_*`":
            i += 1
            continue
        out.append(ch)
        i += 1
    return Parsed("".join(out))
