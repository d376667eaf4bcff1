"""Telegram's HTML style: tags, attributes and character references, as the Bot API reads
them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from tgbroadcast.simulator.markup import links
from tgbroadcast.simulator.markup._text import Formatted, MarkupError, Output, is_space, link_entity

HTML_TAGS: Final = frozenset(
    {
        "a", "b", "strong", "i", "em", "s", "strike", "del", "u", "ins",
        "tg-spoiler", "tg-emoji", "tg-time", "span", "pre", "code", "blockquote",
    }
)  # fmt: skip
"""The start tags Telegram's HTML accepts (lower case; tag names are case-insensitive)."""


_SIMPLE_HTML: Final = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
}
_HTML_NAMED: Final = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}


@dataclass(slots=True)
class _OpenTag:
    name: str
    argument: str
    offset: int
    position: int
    """Where its text starts in the output (characters)."""
    extra: dict[str, Any] = field(default_factory=dict)


def _is_ascii_alnum(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


class HtmlParser(Output):
    def parse(self) -> Formatted:
        text = self.source
        n = len(text)
        stack: list[_OpenTag] = []
        decoded_surrogate = False
        i = 0
        while i < n:
            ch = text[i]
            if ch == "&":
                code, after = self._entity(i)
                if code:
                    if 0xD800 <= code <= 0xDFFF:
                        decoded_surrogate = True
                    self.chars.append(chr(code))
                    self.offset += 2 if code > 0xFFFF else 1
                    i = after
                    continue
            if ch != "<":
                self.add(ch)
                i += 1
                continue
            if self.at(i + 1) != "/":
                opened, i = self._start_tag(i)
                stack.append(opened)
            else:
                i = self._end_tag(i, stack)
        if stack:
            raise MarkupError(f'Can\'t find end tag corresponding to start tag "{stack[-1].name}"')
        if decoded_surrogate:
            raise MarkupError(
                "Text contains invalid Unicode characters after decoding HTML entities, "
                "check for unmatched surrogate code units"
            )
        for entity in self.entities:
            entity.pop("_argument", None)
        return self.result()

    def _entity(self, i: int) -> tuple[int, int]:
        """The code point of the character reference at ``i`` (0: none) and where it ends."""
        text = self.source
        end = i + 1
        code = 0
        if self.at(i + 1) == "#":
            end += 1
            hexadecimal = self.at(i + 2) == "x"
            if hexadecimal:
                end += 1
            digits = "0123456789abcdefABCDEF" if hexadecimal else "0123456789"
            while end < len(text) and text[end] in digits:
                code = code * (16 if hexadecimal else 10) + int(text[end], 16)
                end += 1
            if code == 0 or code >= 0x10FFFF or end - i >= 10:
                return 0, i
        else:
            while end < len(text) and text[end].isascii() and text[end].isalpha():
                end += 1
            named = _HTML_NAMED.get(text[i + 1 : end])
            if named is None:
                return 0, i
            code = ord(named)
        return code, end + 1 if self.at(end) == ";" else end

    def _start_tag(self, begin: int) -> tuple[_OpenTag, int]:
        text = self.source
        n = len(text)
        at = self.byte_offset(begin)
        i = begin + 1
        while i < n and not is_space(text[i]) and text[i] != ">":
            i += 1
        if i >= n:
            raise MarkupError(f"Unclosed start tag at byte offset {at}")
        name = text[begin + 1 : i].lower()
        if name not in HTML_TAGS:
            raise MarkupError(f'Unsupported start tag "{name}" at byte offset {at}')
        argument = ""
        extra: dict[str, Any] = {}
        while self.at(i) != ">":
            while i < n and is_space(text[i]):
                i += 1
            if self.at(i) == ">":
                break
            attribute_begin = i
            while i < n and not is_space(text[i]) and text[i] not in "=>/\"'":
                i += 1
            attribute = text[attribute_begin:i]
            if not attribute:
                raise MarkupError(f'Empty attribute name in the tag "{name}" at byte offset {at}')
            while i < n and is_space(text[i]):
                i += 1
            if self.at(i) != "=":
                if i >= n:
                    raise MarkupError(f'Unclosed start tag "{name}" at byte offset {at}')
                if name == "blockquote" and attribute == "expandable":
                    argument = "1"
                continue
            i += 1
            while i < n and is_space(text[i]):
                i += 1
            if i >= n:
                raise MarkupError(f'Unclosed start tag "{name}" at byte offset {at}')
            if text[i] not in "'\"":
                token_begin = i
                while i < n and (_is_ascii_alnum(text[i]) or text[i] in ".-"):
                    i += 1
                value = text[token_begin:i].lower()
                if not (i < n and (is_space(text[i]) or text[i] == ">")):
                    where = self.byte_offset(token_begin)
                    raise MarkupError(f"Unexpected end of name token at byte offset {where}")
            else:
                value, i = self._quoted(i)
            if i >= n:
                raise MarkupError(f"Unclosed start tag at byte offset {at}")
            if name == "a" and attribute == "href":
                argument = value
            elif name == "code" and attribute == "class" and value.startswith("language-"):
                argument = value.removeprefix("language-")
            elif name == "span" and attribute == "class" and value.startswith("tg-"):
                argument = value.removeprefix("tg-")
            elif name == "tg-emoji" and attribute == "emoji-id":
                argument = value
            elif name == "blockquote" and attribute == "expandable":
                argument = "1"
            elif name == "tg-time" and attribute in ("unix", "format"):
                extra[attribute] = value
        if name == "span" and argument != "spoiler":
            raise MarkupError(f'Tag "span" must have class "tg-spoiler" at byte offset {at}')
        return _OpenTag(name, argument, self.offset, len(self.chars), extra), i + 1

    def _quoted(self, i: int) -> tuple[str, int]:
        """A quoted attribute value from its opening quote at ``i``, character references
        decoded; an unterminated one runs to the end of the text."""
        text = self.source
        quote = text[i]
        i += 1
        value: list[str] = []
        while i < len(text) and text[i] != quote:
            if text[i] == "&":
                code, after = self._entity(i)
                if code:
                    value.append(chr(code))
                    i = after
                    continue
            value.append(text[i])
            i += 1
        if i < len(text):
            i += 1
        return "".join(value), i

    def _end_tag(self, begin: int, stack: list[_OpenTag]) -> int:
        text = self.source
        n = len(text)
        at = self.byte_offset(begin)
        if not stack:
            raise MarkupError(f"Unexpected end tag at byte offset {at}")
        i = begin + 1
        while i < n and not is_space(text[i]) and text[i] != ">":
            i += 1
        name = text[begin + 2 : i].lower()
        while i < n and is_space(text[i]):
            i += 1
        if self.at(i) != ">":
            raise MarkupError(f"Unclosed end tag at byte offset {at}")
        top = stack.pop()
        if name and name != top.name:
            raise MarkupError(
                f'Unmatched end tag at byte offset {at}, expected "</{top.name}>", '
                f'found "</{name}>"'
            )
        if self.offset > top.offset:
            self._close(top)
        return i + 1

    def _close(self, tag: _OpenTag) -> None:
        offset, length = tag.offset, self.offset - tag.offset
        span = {"offset": offset, "length": length}
        previous = self.entities[-1] if self.entities else None
        same_span = previous is not None and (previous["offset"], previous["length"]) == (
            offset,
            length,
        )
        if tag.name in _SIMPLE_HTML or tag.name == "span":
            self.entities.append({"type": _SIMPLE_HTML.get(tag.name, "spoiler"), **span})
        elif tag.name == "tg-emoji":
            try:
                emoji_id = links.emoji_identifier(tag.argument)
            except links.LinkError as exc:
                raise MarkupError(str(exc)) from None
            self.entities.append({"type": "custom_emoji", **span, "custom_emoji_id": emoji_id})
        elif tag.name == "tg-time":
            try:
                when = links.date_time_of(tag.extra.get("unix", ""), tag.extra.get("format", ""))
            except links.LinkError as exc:
                raise MarkupError(str(exc)) from None
            entity: dict[str, Any] = {"type": "date_time", **span, "unix_time": when.unix_time}
            if when.date_time_format:
                entity["date_time_format"] = when.date_time_format
            self.entities.append(entity)
        elif tag.name == "a":
            url = tag.argument or "".join(self.chars[tag.position :])
            link = link_entity(offset, length, url)
            if link is not None:
                self.entities.append(link)
        elif tag.name == "pre":
            if (
                previous is not None
                and same_span
                and previous["type"] == "code"
                and previous.get("_argument")
            ):
                previous["type"] = "pre"
                previous["language"] = previous.pop("_argument")
            else:
                self.entities.append({"type": "pre", **span})
        elif tag.name == "code":
            if previous is not None and same_span and previous["type"] == "pre" and tag.argument:
                previous["language"] = tag.argument
            else:
                self.entities.append({"type": "code", **span, "_argument": tag.argument})
        elif tag.name == "blockquote":
            kind = "expandable_blockquote" if tag.argument else "blockquote"
            self.entities.append({"type": kind, **span})
