"""Telegram's MarkdownV2 parse mode, read as tdlib reads it, and legacy Markdown (see
:mod:`.formatting`).
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from tgbroadcast.core.rules.parsed_text import (
    SPACES,
    FormattingError,
    OpenEntity,
    Parsed,
    TextBuilder,
    custom_emoji_id,
    date_time_fields,
)

MARKDOWN_V2_RESERVED: Final = frozenset("_*[]()~`>#+-=|{}.!")
"""Characters MarkdownV2 refuses unescaped outside markup."""
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


class MarkdownV2Parser(TextBuilder):
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
        stack: list[OpenEntity] = []
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

    def _unclosed(self, top: OpenEntity) -> FormattingError:
        name = _MD_NAMES[top.kind]
        if top.kind == "pre" and top.extra.get("language"):
            name = "PreCode"
        return FormattingError(
            f"Can't find end of {name} entity at byte offset {self.byte_offset(top.at)}"
        )

    def _ends(self, top: OpenEntity, i: int) -> bool:
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

    def _open(self, stack: list[OpenEntity], i: int) -> int:
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
        stack.append(OpenEntity(kind, kind, self.offset, start, extra))
        return i

    def _pre_start(self, i: int, extra: dict[str, Any]) -> int:
        """After an opening ```: the language (up to a space or a newline, when more text
        follows it), then one line break skipped."""
        text = self.source
        end = i
        while end < len(text) and text[end] not in SPACES and text[end] != "`":
            end += 1
        if end != i and end < len(text) and text[end] != "`":
            extra["language"] = text[i:end]
            i = end
        if text[i : i + 1] in ("\n", "\r"):
            pair = text[i + 1 : i + 2] in ("\n", "\r") and text[i + 1] != text[i]
            i += 2 if pair else 1
        return i

    def _close(self, stack: list[OpenEntity], i: int) -> int:
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

    def _url(self, i: int, opened: OpenEntity, what: str) -> tuple[str, int]:
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

    def _custom_emoji(self, i: int, opened: OpenEntity) -> tuple[str, dict[str, Any], int]:
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
            return "date_time", date_time_fields(unix, time_format), after
        if split.scheme.lower() != "tg":
            raise FormattingError("Custom emoji URL must have scheme tg")
        if split.netloc.lower() != "emoji":
            raise FormattingError('Custom emoji URL must have host "emoji"')
        values = parse_qs(split.query).get("id", [])
        if not values:
            raise FormattingError("Custom emoji URL must have an emoji identifier")
        return "custom_emoji", {"custom_emoji_id": custom_emoji_id(values[0])}, after


def legacy_markdown(text: str) -> Parsed:
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
