"""Telegram's MarkdownV2 style and its legacy Markdown, as the Bot API reads them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from tgbroadcast.simulator.markup import links
from tgbroadcast.simulator.markup._text import Formatted, MarkupError, Output, is_space, link_entity

MARKDOWN_V2_RESERVED: Final = "_*[]()~`>#+-=|{}.!"
"""The characters MarkdownV2 refuses unescaped outside code."""


_TDLIB_NAMES: Final = {
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
"""The entity names Telegram's MarkdownV2 errors use."""


@dataclass(slots=True)
class _OpenEntity:
    kind: str
    """A Bot API entity type (``pre`` with a ``language`` is Telegram's PreCode)."""
    offset: int
    index: int
    """Where it starts in the source (characters)."""
    position: int
    """Where its text starts in the output (characters)."""
    language: str = ""

    def tdlib_name(self) -> str:
        if self.kind == "pre" and self.language:
            return "PreCode"
        return _TDLIB_NAMES[self.kind]


def _reserved(ch: str) -> MarkupError:
    return MarkupError(f"Character '{ch}' is reserved and must be escaped with the preceding '\\'")


class MarkdownV2Parser(Output):
    def __init__(self, source: str) -> None:
        super().__init__(source)
        self.in_blockquote = False
        self.line_start = True

    def parse(self) -> Formatted:
        text = self.source
        n = len(text)
        stack: list[_OpenEntity] = []
        i = 0
        while i < n:
            ch = text[i]
            nxt = self.at(i + 1)
            if ch == "\\" and nxt and 0 < ord(nxt) <= 126:
                self.add(nxt)
                if nxt != "\r":
                    self.line_start = nxt == "\n"
                i += 2
                continue
            in_code = bool(stack) and stack[-1].kind in ("code", "pre")
            special = ch == "`" if in_code else ch in MARKDOWN_V2_RESERVED or ch == "\n"
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
            if stack and stack[-1].kind == "spoiler" and stack[-1].index == n - 2:
                stack.pop()
                kind = "expandable_blockquote"
            if stack and stack[-1].kind == "blockquote":
                top = stack.pop()
                if self.offset > top.offset:
                    length = self.offset - top.offset
                    self.entities.append({"type": kind, "offset": top.offset, "length": length})
        if stack:
            top = stack[-1]
            raise MarkupError(
                f"Can't find end of {top.tdlib_name()} entity at byte offset "
                f"{self.byte_offset(top.index)}"
            )
        return self.result()

    def _ends(self, top: _OpenEntity, i: int) -> bool:
        ch, nxt = self.at(i), self.at(i + 1)
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
                return ch == "`" and nxt == "`" and self.at(i + 2) == "`"
            case "text_link" | "custom_emoji":
                return ch == "]"
        return False

    def _open(self, stack: list[_OpenEntity], i: int) -> int:
        """Opens the entity starting at ``i`` (or reads a newline or a quote marker);
        returns where reading goes on."""
        ch, nxt = self.at(i), self.at(i + 1)
        start = i
        language = ""
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
            case "`" if nxt == "`" and self.at(i + 2) == "`":
                kind, (language, i) = "pre", self._pre_start(i + 3)
            case "`":
                kind, i = "code", i + 1
            case "\n":
                self.add("\n")
                self.line_start = True
                return i + 1
            case ">" if self.line_start:
                if self.in_blockquote:
                    return i + 1
                self.in_blockquote = True
                kind, i = "blockquote", i + 1
            case _:
                raise _reserved(ch)
        stack.append(_OpenEntity(kind, self.offset, start, len(self.chars), language))
        return i

    def _pre_start(self, i: int) -> tuple[str, int]:
        """After an opening ```: the language (up to a space or a newline, if any text follows)
        and one line break skipped."""
        text = self.source
        end = i
        while end < len(text) and not is_space(text[end]) and text[end] != "`":
            end += 1
        language = ""
        if end != i and end < len(text) and text[end] != "`":
            language, i = text[i:end], end
        if self.at(i) in ("\n", "\r"):
            pair = self.at(i + 1) in ("\n", "\r") and self.at(i + 1) != self.at(i)
            i += 2 if pair else 1
        return language, i

    def _close(self, stack: list[_OpenEntity], i: int) -> int:
        """Closes the innermost entity at ``i``; returns where reading goes on."""
        top = stack[-1]
        kind = top.kind
        if self.at(i) == "\n" and kind != "blockquote":
            ends_expandable = kind == "spoiler" and (
                top.index == i - 2
                or (top.index == i - 3 and bool(self.chars) and self.chars[-1] == "\r")
            )
            if not ends_expandable:
                raise MarkupError(
                    f"Can't find end of {top.tdlib_name()} entity at byte offset "
                    f"{self.byte_offset(top.index)}"
                )
            stack.pop()
            top = stack[-1]
            if top.kind != "blockquote":
                raise MarkupError(
                    f"Can't find end of {top.tdlib_name()} entity at byte offset "
                    f"{self.byte_offset(top.index)}"
                )
            kind = "expandable_blockquote"
        entity: dict[str, Any] | None = {"type": kind}
        after = i + 1
        match kind:
            case "underline" | "spoiler":
                after = i + 2
            case "pre":
                after = i + 3
                if top.language:
                    entity = {"type": "pre", "language": top.language}
            case "text_link":
                url, after = self._url(i, top, "a URL")
                entity = None
                if self.offset > top.offset:
                    entity = link_entity(top.offset, self.offset - top.offset, url)
            case "custom_emoji":
                entity = self._custom_emoji(i, top)
                after = entity.pop("_after")
            case "blockquote" | "expandable_blockquote":
                self.in_blockquote = False
                self.add(self.at(i))
                self.line_start = True
        stack.pop()
        keep = self.offset > top.offset or kind in ("blockquote", "expandable_blockquote")
        if entity is not None and keep:
            span = {"offset": top.offset, "length": self.offset - top.offset}
            self.entities.append({"type": entity.pop("type"), **span, **entity})
        return after

    def _url(self, i: int, top: _OpenEntity, what: str) -> tuple[str, int]:
        """The ``(url)`` after the ``]`` at ``i`` (escapes allowed; a link without one uses
        its text); returns it and where reading goes on."""
        text = self.source
        if self.at(i + 1) != "(":
            return "".join(self.chars[top.position :]), i + 1
        i += 2
        begin = i
        url: list[str] = []
        while i < len(text) and text[i] != ")":
            nxt = self.at(i + 1)
            if text[i] == "\\" and nxt and 0 < ord(nxt) <= 126:
                url.append(nxt)
                i += 2
                continue
            url.append(text[i])
            i += 1
        if i >= len(text):
            raise MarkupError(f"Can't find end of {what} at byte offset {self.byte_offset(begin)}")
        return "".join(url), i + 1

    def _custom_emoji(self, i: int, top: _OpenEntity) -> dict[str, Any]:
        if self.at(i + 1) != "(":
            raise MarkupError("Custom emoji entity must contain a tg://emoji URL")
        url, after = self._url(i, top, "a custom emoji URL")
        try:
            if url.lower().startswith("tg://time"):
                when = links.date_time(url)
                entity: dict[str, Any] = {"type": "date_time", "unix_time": when.unix_time}
                if when.date_time_format:
                    entity["date_time_format"] = when.date_time_format
            else:
                entity = {"type": "custom_emoji", "custom_emoji_id": links.custom_emoji_id(url)}
        except links.LinkError as exc:
            raise MarkupError(str(exc)) from None
        entity["_after"] = after
        return entity


class MarkdownParser(Output):
    """Telegram's legacy Markdown: ``*bold*``, ``_italic_``, ```code```, ````pre````,
    ``[text](url)``; only ``_*`[`` are special and only those can be escaped."""

    def parse(self) -> Formatted:
        text = self.source
        n = len(text)
        i = 0
        while i < n:
            ch = text[i]
            if ch == "\\" and self.at(i + 1) in ("_", "*", "`", "["):
                self.add(text[i + 1])
                i += 2
                continue
            if ch not in "_*`[":
                self.add(ch)
                i += 1
                continue
            begin = i
            end_char = "]" if ch == "[" else ch
            pre = ch == "`" and self.at(i + 1) == "`" and self.at(i + 2) == "`"
            language = ""
            i += 1
            if pre:
                i += 2
                end = i
                while end < n and not is_space(text[end]) and text[end] != "`":
                    end += 1
                if end != i and end < n and text[end] != "`":
                    language, i = text[i:end], end
                if self.at(i) in ("\n", "\r"):
                    pair = self.at(i + 1) in ("\n", "\r") and self.at(i + 1) != self.at(i)
                    i += 2 if pair else 1
            start, position = self.offset, len(self.chars)
            while i < n and (text[i] != end_char or (pre and not text.startswith("``", i + 1))):
                self.add(text[i])
                i += 1
            if i >= n:
                raise MarkupError(
                    "Can't find end of the entity starting at byte offset "
                    f"{self.byte_offset(begin)}"
                )
            if self.offset > start:
                span = {"offset": start, "length": self.offset - start}
                if ch == "[":
                    url = "".join(self.chars[position:])
                    if self.at(i + 1) == "(":
                        close = text.find(")", i + 2)
                        close = n if close < 0 else close
                        url, i = text[i + 2 : close], close
                    link = link_entity(start, self.offset - start, url)
                    if link is not None:
                        self.entities.append(link)
                elif pre:
                    entity = {"type": "pre", **span}
                    self.entities.append(entity | ({"language": language} if language else {}))
                else:
                    kind = {"_": "italic", "*": "bold", "`": "code"}[ch]
                    self.entities.append({"type": kind, **span})
            i += 3 if pre else 1
        return self.result()
