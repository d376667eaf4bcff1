"""The service's own parser of Telegram's formatting (``tgbroadcast.core.rules.formatting``):
what it accepts, what it refuses with Telegram's reason, and the length it counts — on the
cases where it once disagreed with Telegram (see also tests/test_simulator_formatting.py,
which compares it with the simulator's independent parser)."""

from __future__ import annotations

from typing import Any

import pytest

from tgbroadcast.core.rules.formatting import FormattingError, Parsed, parse

E = dict[str, Any]

SURROGATE = (
    "Text contains invalid Unicode characters after decoding HTML entities, check for "
    "unmatched surrogate code units"
)


def ent(kind: str, offset: int, length: int, **extra: Any) -> E:
    return {"type": kind, "offset": offset, "length": length, **extra}


def refused(text: str, mode: str) -> str:
    with pytest.raises(FormattingError) as failed:
        parse(text, mode)
    return str(failed.value)


# ---- HTML: what Telegram refuses ----


@pytest.mark.parametrize(
    "source",
    ["<span>s</span>", '<span class="spoiler">s</span>', '<span class="TG-SPOILER">s</span>'],
)
def test_span_needs_the_spoiler_class(source: str) -> None:
    assert refused(source, "HTML") == 'Tag "span" must have class "tg-spoiler" at byte offset 0'
    assert refused("é" + source, "HTML").endswith("at byte offset 2")


def test_span_with_the_spoiler_class_is_a_spoiler() -> None:
    for source in ('<span class="tg-spoiler">s</span>', "<span class=TG-Spoiler>s</span>"):
        assert parse(source, "HTML") == Parsed("s", [ent("spoiler", 0, 1)])
    # a class Telegram does not read does not undo the one it does
    source = '<span class="tg-spoiler" class="big">s</span>'
    assert parse(source, "HTML").entities == [ent("spoiler", 0, 1)]


@pytest.mark.parametrize(
    "source",
    [
        "<tg-emoji>x</tg-emoji>",
        '<tg-emoji emoji-id="">x</tg-emoji>',
        '<tg-emoji emoji-id="abc">x</tg-emoji>',
        '<tg-emoji emoji-id="0">x</tg-emoji>',
        '<tg-emoji emoji-id="9223372036854775808">x</tg-emoji>',
    ],
)
def test_custom_emoji_needs_a_numeric_identifier(source: str) -> None:
    assert refused(source, "HTML") == "Invalid custom emoji identifier specified"


def test_custom_emoji_identifier() -> None:
    parsed = parse('<tg-emoji emoji-id="5368324170671202286">👍</tg-emoji>', "HTML")
    assert parsed.entities == [ent("custom_emoji", 0, 2, custom_emoji_id="5368324170671202286")]
    # an empty entity is dropped before its identifier is checked
    assert parse("<tg-emoji></tg-emoji>x", "HTML") == Parsed("x")


def test_date_time_needs_its_arguments() -> None:
    assert refused("<tg-time>x</tg-time>", "HTML") == "Invalid Unix time specified"
    assert refused('<tg-time unix="1" format="x">x</tg-time>', "HTML") == (
        "Invalid date and time format specified"
    )
    parsed = parse('<tg-time unix="1647531900" format="wDT">x</tg-time>', "HTML")
    assert parsed.entities == [ent("date_time", 0, 1, unix_time=1647531900, date_time_format="wDT")]


@pytest.mark.parametrize(
    ("source", "offset"),
    [
        ("<a href=https://t.me>x</a>", 8),
        ("<a href=t.me/x>x</a>", 8),
        ("<b x=a_b>x</b>", 5),
        ("<b x = y/>x</b>", 7),
        ("<b x=ok", 5),
        ("é<a href=a?b>x</a>", 10),
    ],
)
def test_unquoted_attribute_values_are_name_tokens(source: str, offset: int) -> None:
    assert refused(source, "HTML") == f"Unexpected end of name token at byte offset {offset}"


def test_attributes() -> None:
    assert parse("<a href=T.ME>x</a>", "HTML").entities == [ent("text_link", 0, 1, url="t.me")]
    assert parse('<a href = "https://t.me/a?b=1&amp;c=2" >x</a >', "HTML").entities == [
        ent("text_link", 0, 1, url="https://t.me/a?b=1&c=2")
    ]
    assert parse("<b data:x=1 checked>x</b>", "HTML").entities == [ent("bold", 0, 1)]
    assert parse("<blockquote expandable>q</blockquote>", "HTML").entities == [
        ent("expandable_blockquote", 0, 1)
    ]
    assert refused("<b =1>", "HTML") == 'Empty attribute name in the tag "b" at byte offset 0'
    assert refused("<b x", "HTML") == 'Unclosed start tag "b" at byte offset 0'
    assert refused('<a href="x>y</a>', "HTML") == "Unclosed start tag at byte offset 0"


@pytest.mark.parametrize(
    "source", ["&#xD83D;", "&#xDE00;", "&#55357;", "&#xD83D;&#xDE00;", "a &#xdfff b"]
)
def test_references_to_surrogates_are_refused(source: str) -> None:
    assert refused(source, "HTML") == SURROGATE


def test_a_surrogate_is_refused_after_the_markup_is_checked() -> None:
    assert refused("<b>&#xD83D;", "HTML") == ('Can\'t find end tag corresponding to start tag "b"')
    # in an attribute it is no text: a link Telegram cannot open, not a refusal
    assert parse('<a href="&#xD83D;">x</a>', "HTML").text == "x"


# ---- HTML: what changes the counted length ----


@pytest.mark.parametrize(
    ("source", "text"),
    [
        ("a &amp b &lt c &gt d &quot", 'a & b < c > d "'),
        ("&amp;&amp", "&&"),
        ("&#65&#x42;c", "ABc"),  # numeric references need no ';' either
        ("&ampx &AMP; &nbsp;", "&ampx &AMP; &nbsp;"),
        ("&#X41; &#x; &#; &#0;", "&#X41; &#x; &#; &#0;"),
        ("&#1114111; &#x10FFFF;", "&#1114111; &#x10FFFF;"),
        ("&#1114110;", "\U0010fffe"),
        ("&#0000065; &#00000065;", "A &#00000065;"),  # 10 characters or more stay literal
        ("&#" + "9" * 5000, "&#" + "9" * 5000),
    ],
)
def test_character_references(source: str, text: str) -> None:
    assert parse(source, "HTML").text == text


def test_empty_end_tag_closes_the_innermost_tag() -> None:
    assert parse("<b>x</>", "HTML") == Parsed("x", [ent("bold", 0, 1)])
    assert parse("<b>x<i>y</></>", "HTML") == Parsed("xy", [ent("bold", 0, 2), ent("italic", 1, 1)])
    assert refused("</>", "HTML") == "Unexpected end tag at byte offset 0"
    assert refused("<b>x</ b>", "HTML") == "Unclosed end tag at byte offset 4"
    assert refused("<b>x</b x>", "HTML") == "Unclosed end tag at byte offset 4"


def test_only_ascii_whitespace_separates_attributes() -> None:
    assert refused("<b\u00a0x>y</b>", "HTML") == 'Unsupported start tag "b\u00a0x" at byte offset 0'


# ---- MarkdownV2 ----


def test_a_backtick_inside_pre_must_be_escaped() -> None:
    assert refused("```\na`b```", "MarkdownV2") == "Can't find end of Pre entity at byte offset 0"
    assert refused("x ```py\na`b```", "MarkdownV2") == (
        "Can't find end of PreCode entity at byte offset 2"
    )
    assert parse("```\na\\`b```", "MarkdownV2") == Parsed("a`b", [ent("pre", 0, 3)])
    # only the backtick is markup inside pre: other reserved characters are text
    assert parse("```\n*a.b*\n```", "MarkdownV2").text == "*a.b*\n"


@pytest.mark.parametrize(
    ("source", "text", "entities"),
    [
        (">quote", "quote", [ent("blockquote", 0, 5)]),
        (">a\n>b\nc", "a\nb\nc", [ent("blockquote", 0, 4)]),
        (">>x", "x", [ent("blockquote", 0, 1)]),
        ("x\n>q", "x\nq", [ent("blockquote", 2, 1)]),
        ("\\\n>q", "\nq", [ent("blockquote", 1, 1)]),
        ("**>hidden\n>more||", "hidden\nmore", [ent("expandable_blockquote", 0, 11)]),
        (
            ">quote\n**>hidden\n>more||\nafter",
            "quote\nhidden\nmore\nafter",
            [ent("blockquote", 0, 6), ent("expandable_blockquote", 6, 12)],
        ),
        (">||", "", []),
        (">a||\r\nb", "a\r\nb", [ent("expandable_blockquote", 0, 3)]),
        (">*b*\n>c", "b\nc", [ent("blockquote", 0, 3), ent("bold", 0, 1)]),
        (">a||b||", "ab", [ent("blockquote", 0, 2), ent("spoiler", 1, 1)]),
    ],
)
def test_blockquotes(source: str, text: str, entities: list[E]) -> None:
    assert parse(source, "MarkdownV2") == Parsed(text, entities)


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("x>q", "Character '>' is reserved and must be escaped with the preceding '\\'"),
        (" >q", "Character '>' is reserved and must be escaped with the preceding '\\'"),
        ("*\n>*", "Can't find end of Bold entity at byte offset 3"),
        ("*a\n>b*", "Can't find end of Bold entity at byte offset 5"),
        (">*b\nc*", "Can't find end of Bold entity at byte offset 1"),
        (">a||\n>b", "Can't find end of Spoiler entity at byte offset 2"),
        (">a||b\nc||", "Can't find end of Spoiler entity at byte offset 2"),
        ("||a||\n", None),
    ],
)
def test_blockquote_refusals(source: str, reason: str | None) -> None:
    if reason is None:
        assert parse(source, "MarkdownV2").text == "a\n"
    else:
        assert refused(source, "MarkdownV2") == reason


def test_inline_custom_emoji_and_date_time() -> None:
    assert parse("![x](tg://time?unix=1647531900&format=wDT)", "MarkdownV2").entities == [
        ent("date_time", 0, 1, unix_time=1647531900, date_time_format="wDT")
    ]
    assert parse("![x](tg://emoji?id=5)", "MarkdownV2").entities == [
        ent("custom_emoji", 0, 1, custom_emoji_id="5")
    ]
    assert refused("![x](tg://time?unix=x)", "MarkdownV2") == "Invalid Unix time specified"
    assert refused("![x](https://t.me)", "MarkdownV2") == "Custom emoji URL must have scheme tg"
    assert refused("![x](tg://emoji?id=a)", "MarkdownV2") == (
        "Invalid custom emoji identifier specified"
    )
    assert refused("![x](tg://[x)", "MarkdownV2") == (
        "Custom emoji URL must have an emoji identifier"
    )
    assert refused("[t](https://t.me", "MarkdownV2") == "Can't find end of a URL at byte offset 4"
