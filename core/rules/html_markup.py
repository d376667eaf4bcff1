"""Telegram's HTML parse mode, read as tdlib reads it: the tags and attributes it knows,
character references, and the errors it answers (see :mod:`.formatting`).
"""

from __future__ import annotations

from typing import Any, Final

from tgbroadcast.core.rules.parsed_text import (
    SPACES,
    FormattingError,
    OpenEntity,
    Parsed,
    TextBuilder,
    custom_emoji_id,
    date_time_fields,
)

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
_CLASS_PREFIX: Final = {"span": "tg-", "code": "language-"}
"""The ``class`` values a tag reads; Telegram ignores any other ``class``."""
_SURROGATE_ERROR: Final = (
    "Text contains invalid Unicode characters after decoding HTML entities, "
    "check for unmatched surrogate code units"
)


def _unquoted_value_char(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch in ".-")


class HtmlParser(TextBuilder):
    """HTML as tdlib reads it: tags and attribute names as below, ``</>`` closing the
    innermost tag, and a reference to a surrogate (``&#xD83D;``) refusing the whole text."""

    def parse(self) -> Parsed:
        text = self.source
        n = len(text)
        stack: list[OpenEntity] = []
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

    def _start_tag(self, begin: int) -> tuple[OpenEntity, int]:
        """The tag starting with ``<`` at ``begin``; returns it and the index after ``>``."""
        text = self.source
        n = len(text)
        j = begin + 1
        while j < n and text[j] not in SPACES and text[j] != ">":
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
        return OpenEntity(name, kind, self.offset, begin, extra), i

    def _end_tag(self, begin: int, stack: list[OpenEntity]) -> int:
        """Closes the innermost tag with the ``</...>`` at ``begin`` (``</>`` closes any);
        returns the index after ``>``."""
        text = self.source
        n = len(text)
        if not stack:
            raise FormattingError(f"Unexpected end tag at byte offset {self.byte_offset(begin)}")
        j = begin + 2
        while j < n and text[j] not in SPACES and text[j] != ">":
            j += 1
        name = text[begin + 2 : j].lower()
        while j < n and text[j] in SPACES:
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
                extra = {"custom_emoji_id": custom_emoji_id(extra["custom_emoji_id"])}
            elif top.kind == "date_time":
                extra = date_time_fields(extra["unix"], extra["format"])
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
            while i < n and text[i] in SPACES:
                i += 1
            if i < n and text[i] == ">":
                break
            start = i
            while i < n and text[i] not in SPACES and text[i] not in "=>/\"'":
                i += 1
            attribute = text[start:i]
            if not attribute:
                raise FormattingError(
                    f'Empty attribute name in the tag "{name}" at byte offset {at}'
                )
            while i < n and text[i] in SPACES:
                i += 1
            if i >= n:
                raise FormattingError(f'Unclosed start tag "{name}" at byte offset {at}')
            if text[i] != "=":
                attrs[attribute] = ""
                continue
            i += 1
            while i < n and text[i] in SPACES:
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
                if i >= n or (text[i] not in SPACES and text[i] != ">"):
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
