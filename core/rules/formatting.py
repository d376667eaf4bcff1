"""Telegram's formatting, parsed as the Bot API server parses it (tdlib's HTML and MarkdownV2
parsers): the visible text, its entities, or the error Telegram would answer.

Telegram counts a message's length *after* entities parsing (``<b>hi</b>`` is 2 characters),
and refuses malformed markup with ``Bad Request: can't parse entities: <reason>``. Both are
decided here, before anything is stored, so a broadcast never fails at its first recipient
for markup the service could have checked. :func:`escape` makes any value literal text in a
parse mode (personalization inserts user names with it).

Pure functions, no I/O. The simulator answers from its own parser (``tgbroadcast.simulator.markup``);
tests/test_simulator_formatting.py compares the two.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

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
    "blockquote": "BlockQuote",
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


_SPACES: Final = " \t\n\r\f\v"
"""Whitespace in Telegram's markup: ASCII only (a no-break space is text)."""
_CLASS_PREFIX: Final = {"span": "tg-", "code": "language-"}
"""The ``class`` values a tag reads; Telegram ignores any other ``class``."""
_SURROGATE_ERROR: Final = (
    "Text contains invalid Unicode characters after decoding HTML entities, "
    "check for unmatched surrogate code units"
)


def _unquoted_value_char(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch in ".-")


class _Html(_Builder):
    """HTML as tdlib reads it: tags and attribute names as below, ``</>`` closing the
    innermost tag, and a reference to a surrogate (``&#xD83D;``) refusing the whole text."""

    def parse(self) -> Parsed:
        text = self.source
        n = len(text)
        stack: list[_Open] = []
        decoded_surrogate = False
        i = 0
        while i < n:
            ch = text[i]
            if ch == "&":
                decoded, after = _html_entity(text, i)
                if "\ud800" <= decoded <= "\udfff":
                    decoded_surrogate = True  # refused once the markup is known valid
                    decoded = "\ufffd"
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
            if text[i + 1 : i + 2] == "/":
                i = self._end_tag(i, stack)
            else:
                opened, i = self._start_tag(i)
                stack.append(opened)
        if stack:
            raise FormattingError(
                f'Can\'t find end tag corresponding to start tag "{stack[-1].name}"'
            )
        if decoded_surrogate:
            raise FormattingError(_SURROGATE_ERROR)
        return self.result()

    def _start_tag(self, begin: int) -> tuple[_Open, int]:
        """The tag starting with ``<`` at ``begin``; returns it and the index after ``>``."""
        text = self.source
        n = len(text)
        j = begin + 1
        while j < n and text[j] not in _SPACES and text[j] != ">":
            j += 1
        if j >= n:
            raise FormattingError(f"Unclosed start tag at byte offset {self.byte_offset(begin)}")
        name = text[begin + 1 : j].lower()
        kind = _HTML_TAGS.get(name)
        if kind is None:
            raise FormattingError(
                f'Unsupported start tag "{name}" at byte offset {self.byte_offset(begin)}'
            )
        attrs, i = self._attributes(name, j, begin)
        extra: dict[str, Any] = {}
        if kind == "text_link" and attrs.get("href"):
            extra["url"] = attrs["href"]
        elif name == "span" and attrs.get("class") != "tg-spoiler":
            raise FormattingError(
                f'Tag "span" must have class "tg-spoiler" at byte offset {self.byte_offset(begin)}'
            )
        elif kind == "custom_emoji":
            extra["custom_emoji_id"] = attrs.get("emoji-id", "")
        elif kind == "date_time":
            extra = {"unix": attrs.get("unix", ""), "format": attrs.get("format", "")}
        elif kind == "blockquote" and "expandable" in attrs:
            kind = "expandable_blockquote"
        return _Open(name, kind, self.offset, begin, extra), i

    def _end_tag(self, begin: int, stack: list[_Open]) -> int:
        """Closes the innermost tag with the ``</...>`` at ``begin`` (``</>`` closes any);
        returns the index after ``>``."""
        text = self.source
        n = len(text)
        if not stack:
            raise FormattingError(f"Unexpected end tag at byte offset {self.byte_offset(begin)}")
        j = begin + 2
        while j < n and text[j] not in _SPACES and text[j] != ">":
            j += 1
        name = text[begin + 2 : j].lower()
        while j < n and text[j] in _SPACES:
            j += 1
        if j >= n or text[j] != ">":
            raise FormattingError(f"Unclosed end tag at byte offset {self.byte_offset(begin)}")
        top = stack.pop()
        if name and name != top.name:
            raise FormattingError(
                f"Unmatched end tag at byte offset {self.byte_offset(begin)}, "
                f'expected "</{top.name}>", found "</{name}>"'
            )
        if self.offset > top.start:  # an empty entity is dropped unchecked, as on Telegram
            extra = top.extra
            if top.kind == "custom_emoji":
                extra = {"custom_emoji_id": _emoji_id(extra["custom_emoji_id"])}
            elif top.kind == "date_time":
                extra = _date_time(extra["unix"], extra["format"])
            # <a> without href links its own text when that is a URL (same length either way)
            if top.kind != "text_link" or "url" in extra:
                self.entity(top.kind, top.start, **extra)
        return j + 1

    def _attributes(self, name: str, i: int, begin: int) -> tuple[dict[str, str], int]:
        """Attributes from ``i`` up to the tag's ``>``; returns them and the index after ``>``.

        Names are case-sensitive; an unquoted value may only hold ``[A-Za-z0-9.-]`` (read in
        lower case), a quoted one may hold character references and, unterminated, runs to
        the end of the text."""
        text = self.source
        n = len(text)
        at = self.byte_offset(begin)
        attrs: dict[str, str] = {}
        while text[i] != ">":
            while i < n and text[i] in _SPACES:
                i += 1
            if i < n and text[i] == ">":
                break
            start = i
            while i < n and text[i] not in _SPACES and text[i] not in "=>/\"'":
                i += 1
            attribute = text[start:i]
            if not attribute:
                raise FormattingError(
                    f'Empty attribute name in the tag "{name}" at byte offset {at}'
                )
            while i < n and text[i] in _SPACES:
                i += 1
            if i >= n:
                raise FormattingError(f'Unclosed start tag "{name}" at byte offset {at}')
            if text[i] != "=":
                attrs[attribute] = ""
                continue
            i += 1
            while i < n and text[i] in _SPACES:
                i += 1
            if i >= n:
                raise FormattingError(f'Unclosed start tag "{name}" at byte offset {at}')
            if text[i] in "\"'":
                end = text.find(text[i], i + 1)
                end = n if end < 0 else end
                value = _decode_html(text[i + 1 : end])
                i = end + 1
            else:
                start = i
                while i < n and _unquoted_value_char(text[i]):
                    i += 1
                if i >= n or (text[i] not in _SPACES and text[i] != ">"):
                    raise FormattingError(
                        f"Unexpected end of name token at byte offset {self.byte_offset(start)}"
                    )
                value = text[start:i].lower()
            if i >= n:
                raise FormattingError(f"Unclosed start tag at byte offset {at}")
            prefix = _CLASS_PREFIX.get(name)
            if attribute != "class" or (prefix is not None and value.startswith(prefix)):
                attrs[attribute] = value
        return attrs, i + 1


def _html_entity(text: str, i: int) -> tuple[str, int]:
    """The character a reference at ``i`` stands for and the index after it, as Telegram reads
    it: ``&lt`` ``&gt`` ``&amp`` ``&quot``, ``&#N`` and ``&#xH`` (lower-case ``x``), the ``;``
    optional. Anything else — another name, code 0 or from U+10FFFF, or 10 characters and
    more — leaves the ``&`` literal. A surrogate is returned as is: the caller refuses it."""
    n = len(text)
    end = i + 1
    if text[end : end + 1] == "#":
        end += 1
        hexadecimal = text[end : end + 1] == "x"
        end += hexadecimal
        digits = "0123456789abcdefABCDEF" if hexadecimal else "0123456789"
        code = 0
        while end < n and text[end] in digits:
            if end - i < 10:  # a longer one is literal; don't grow a huge number
                code = code * (16 if hexadecimal else 10) + int(text[end], 16)
            end += 1
        if code == 0 or code >= 0x10FFFF or end - i >= 10:
            return "&", i + 1
        decoded = chr(code)
    else:
        while end < n and text[end].isascii() and text[end].isalpha():
            end += 1
        named = _HTML_ENTITIES.get(text[i + 1 : end])
        if named is None:
            return "&", i + 1
        decoded = named
    return decoded, end + 1 if text[end : end + 1] == ";" else end


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


def _emoji_id(value: str) -> str:
    """A custom emoji identifier as Telegram accepts it: a non-zero 64-bit integer."""
    if not re.fullmatch(r"-?[0-9]+", value) or not 0 < abs(int(value)) < 2**63:
        raise FormattingError("Invalid custom emoji identifier specified")
    return str(int(value))


def _date_time(unix: str, time_format: str) -> dict[str, Any]:
    """A ``date_time`` entity's fields from its ``unix`` and ``format`` arguments."""
    if not re.fullmatch(r"[0-9]{1,10}", unix):
        raise FormattingError("Invalid Unix time specified")
    if not re.fullmatch(r"r|w?[dD]?[tT]?", time_format):
        raise FormattingError("Invalid date and time format specified")
    fields: dict[str, Any] = {"unix_time": int(unix)}
    if time_format:
        fields["date_time_format"] = time_format
    return fields


class _MarkdownV2(_Builder):
    """MarkdownV2 as tdlib reads it: outside code every reserved character must be escaped;
    inside code and pre only a backtick is markup (an unescaped one opens a code entity that
    the pre's end cannot close); ``>`` opens a blockquote only at a line's start, and the
    quote ends at the first newline not followed by ``>`` — expandable when ``||`` comes right
    before that newline or the end of the text (``**>hidden\\n>more||``)."""

    def __init__(self, source: str) -> None:
        super().__init__(source)
        self.in_blockquote = False
        self.line_start = True

    def parse(self) -> Parsed:
        text = self.source
        n = len(text)
        stack: list[_Open] = []
        i = 0
        while i < n:
            ch = text[i]
            nxt = text[i + 1 : i + 2]
            if ch == "\\" and nxt and 0 < ord(nxt) <= 126:
                self.add(nxt)
                if nxt != "\r":
                    self.line_start = nxt == "\n"
                i += 2
                continue
            if stack and stack[-1].kind in ("code", "pre"):
                special = ch == "`"
            else:
                special = ch in MARKDOWN_V2_RESERVED or ch == "\n"
            if not special:
                self.add(ch)
                if ch != "\r":
                    self.line_start = False
                i += 1
                continue
            if stack and self._ends(stack[-1], i):
                i = self._close(stack, i)
            else:
                i = self._open(stack, i)
        if self.in_blockquote:
            kind = "blockquote"
            if stack and stack[-1].kind == "spoiler" and stack[-1].at == n - 2:
                stack.pop()
                kind = "expandable_blockquote"
            if stack and stack[-1].kind == "blockquote":
                self.entity(kind, stack.pop().start)
        if stack:
            raise self._unclosed(stack[-1])
        return self.result()

    def _unclosed(self, top: _Open) -> FormattingError:
        name = _MD_NAMES[top.kind]
        if top.kind == "pre" and top.extra.get("language"):
            name = "PreCode"
        return FormattingError(
            f"Can't find end of {name} entity at byte offset {self.byte_offset(top.at)}"
        )

    def _ends(self, top: _Open, i: int) -> bool:
        """Whether the character at ``i`` ends ``top``, the innermost open entity."""
        text = self.source
        ch, nxt = text[i], text[i + 1 : i + 2]
        if self.in_blockquote and ch == "\n" and nxt != ">":
            return True
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
            case "code":
                return ch == "`"
            case "pre":
                return text.startswith("```", i)
            case "text_link" | "custom_emoji":
                return ch == "]"
        return False

    def _open(self, stack: list[_Open], i: int) -> int:
        """Opens the entity starting at ``i`` (or reads a newline or a quote's ``>``); returns
        where reading goes on."""
        text = self.source
        ch, nxt = text[i], text[i + 1 : i + 2]
        start = i
        extra: dict[str, Any] = {}
        match ch:
            case "_" if nxt == "_":
                kind, i = "underline", i + 2
            case "_":
                kind, i = "italic", i + 1
            case "*":
                kind, i = "bold", i + 1
            case "~":
                kind, i = "strikethrough", i + 1
            case "|" if nxt == "|":
                kind, i = "spoiler", i + 2
            case "[":
                kind, i = "text_link", i + 1
            case "!" if nxt == "[":
                kind, i = "custom_emoji", i + 2
            case "`" if text.startswith("```", i):
                kind, i = "pre", self._pre_start(i + 3, extra)
            case "`":
                kind, i = "code", i + 1
            case "\n":
                self.add("\n")
                self.line_start = True
                return i + 1
            case ">" if self.line_start:
                if self.in_blockquote:
                    return i + 1  # the next line of the quote (or ">>")
                self.in_blockquote = True
                kind, i = "blockquote", i + 1
            case _:
                raise FormattingError(
                    f"Character '{ch}' is reserved and must be escaped with the preceding '\\'"
                )
        stack.append(_Open(kind, kind, self.offset, start, extra))
        return i

    def _pre_start(self, i: int, extra: dict[str, Any]) -> int:
        """After an opening ```: the language (up to a space or a newline, when more text
        follows it), then one line break skipped."""
        text = self.source
        end = i
        while end < len(text) and text[end] not in _SPACES and text[end] != "`":
            end += 1
        if end != i and end < len(text) and text[end] != "`":
            extra["language"] = text[i:end]
            i = end
        if text[i : i + 1] in ("\n", "\r"):
            pair = text[i + 1 : i + 2] in ("\n", "\r") and text[i + 1] != text[i]
            i += 2 if pair else 1
        return i

    def _close(self, stack: list[_Open], i: int) -> int:
        """Closes the innermost entity at ``i``; returns where reading goes on."""
        text = self.source
        top = stack[-1]
        kind = top.kind
        if text[i] == "\n" and kind != "blockquote":  # the end of a quote
            expandable = kind == "spoiler" and (
                top.at == i - 2 or (top.at == i - 3 and text[i - 1] == "\r")
            )
            if not expandable:
                raise self._unclosed(top)
            stack.pop()
            top = stack[-1]
            if top.kind != "blockquote":
                raise self._unclosed(top)
            kind = "expandable_blockquote"
        stack.pop()
        extra = top.extra
        after = i + 1
        match kind:
            case "underline" | "spoiler":
                after = i + 2
            case "pre":
                after = i + 3
            case "text_link":
                url, after = self._url(i, top, "a URL")
                if not url:
                    return after  # the text itself is the URL, if any (same length)
                extra = {"url": url}
            case "custom_emoji":
                kind, extra, after = self._custom_emoji(i, top)
            case "blockquote" | "expandable_blockquote":
                self.in_blockquote = False
                self.add("\n")
                self.line_start = True
        self.entity(kind, top.start, **extra)
        return after

    def _url(self, i: int, opened: _Open, what: str) -> tuple[str, int]:
        """The ``(url)`` after the ``]`` at ``i`` (``""`` without one; escapes allowed,
        ``)`` ends it); returns it and where reading goes on."""
        text = self.source
        if text[i + 1 : i + 2] != "(":
            return "", i + 1
        i += 2
        begin = i
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
                f"Can't find end of {what} at byte offset {self.byte_offset(begin)}"
            )
        return "".join(url), i + 1

    def _custom_emoji(self, i: int, opened: _Open) -> tuple[str, dict[str, Any], int]:
        """The ``(tg://emoji?id=N)`` or ``(tg://time?unix=T&format=F)`` after ``![...]``:
        the entity's type and fields, and where reading goes on."""
        if self.source[i + 1 : i + 2] != "(":
            raise FormattingError("Custom emoji entity must contain a tg://emoji URL")
        url, after = self._url(i, opened, "a custom emoji URL")
        try:
            split = urlsplit(url)
        except ValueError:  # a malformed [host]
            raise FormattingError("Custom emoji URL must have an emoji identifier") from None
        if url.lower().startswith("tg://time"):
            query = parse_qs(split.query, keep_blank_values=True)
            unix, time_format = query.get("unix", [""])[0], query.get("format", [""])[0]
            return "date_time", _date_time(unix, time_format), after
        if split.scheme.lower() != "tg":
            raise FormattingError("Custom emoji URL must have scheme tg")
        if split.netloc.lower() != "emoji":
            raise FormattingError('Custom emoji URL must have host "emoji"')
        values = parse_qs(split.query).get("id", [])
        if not values:
            raise FormattingError("Custom emoji URL must have an emoji identifier")
        return "custom_emoji", {"custom_emoji_id": _emoji_id(values[0])}, after


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
