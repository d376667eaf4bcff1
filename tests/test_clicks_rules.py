"""Click tracking's rules without I/O: which links are tracked, in which order, how a text
with markup is sent once its links are rewritten, and codes that only their key signs."""

from __future__ import annotations

from tgbroadcast.core.domain.content import (
    ContentOptions,
    Entity,
    InlineButton,
    InlineKeyboard,
    LinkPreview,
    ParseMode,
)
from tgbroadcast.core.domain.model import Content, MediaType
from tgbroadcast.core.rules.clicks import (
    ClickCode,
    decode_unverified,
    encode,
    links,
    tracked,
    verify,
)

KEYBOARD = InlineKeyboard(
    rows=(
        (
            InlineButton(text="a", url="https://a.example/"),
            InlineButton(text="x", callback_data="x"),
        ),
        (InlineButton(text="b", url="https://b.example/"),),
    )
)


def test_buttons_row_by_row_then_text_links_in_text_order() -> None:
    content = Content(
        message="one two",
        options=ContentOptions(
            reply_markup=KEYBOARD,
            entities=(
                Entity(type="text_link", offset=4, length=3, url="https://two.example/"),
                Entity(type="bold", offset=0, length=3),
                Entity(type="text_link", offset=0, length=3, url="https://one.example/"),
            ),
        ),
    )
    assert links(content) == [
        "https://a.example/",
        "https://b.example/",
        "https://one.example/",
        "https://two.example/",
    ]
    rewritten = tracked(content, lambda i: f"https://t.example/{i}")
    assert links(rewritten) == [f"https://t.example/{i}" for i in range(4)]
    assert rewritten.options.link_preview == LinkPreview(url="https://one.example/")


def test_markup_is_sent_as_the_entities_telegram_would_parse() -> None:
    content = Content(
        message='<b>Hi</b> <a href="https://x.example/">there</a>',
        options=ContentOptions(
            parse_mode=ParseMode.HTML, link_preview=LinkPreview(is_disabled=True)
        ),
    )
    rewritten = tracked(content, lambda i: "https://t.example/0")
    assert rewritten.message == "Hi there"
    assert rewritten.options.parse_mode is None
    assert [(e.type, e.offset, e.length, e.url) for e in rewritten.options.entities] == [
        ("bold", 0, 2, None),
        ("text_link", 3, 5, "https://t.example/0"),
    ]
    assert rewritten.options.link_preview == LinkPreview(is_disabled=True)  # left off


def test_a_date_entity_is_carried_beside_the_tracked_links() -> None:
    """A ``<tg-time>`` becomes an explicit ``date_time`` entity with its time and format, as
    the other entities do, so the text's links are tracked too."""
    content = Content(
        message='<tg-time unix="1700000000" format="wDT">then</tg-time> <a href="https://x.example/">x</a>',
        media_type=MediaType.PHOTO,
        options=ContentOptions(parse_mode=ParseMode.HTML, reply_markup=KEYBOARD),
    )
    rewritten = tracked(content, lambda i: f"https://t.example/{i}")
    assert rewritten.message == "then x"
    assert rewritten.options.parse_mode is None
    assert rewritten.options.entities == (
        Entity(type="date_time", offset=0, length=4, unix_time=1700000000, date_time_format="wDT"),
        Entity(type="text_link", offset=5, length=1, url="https://t.example/2"),
    )
    assert links(rewritten) == [f"https://t.example/{i}" for i in range(3)]


def test_a_code_is_its_keys_alone() -> None:
    code = ClickCode(broadcast_id=7, user_id=-1001234567890, variant=2, link=300)
    text = encode(code, b"k" * 16)
    decoded = decode_unverified(text)
    assert decoded is not None
    claim, payload, tag = decoded
    assert claim == code
    assert verify(payload, tag, b"k" * 16)
    assert not verify(payload, tag, b"j" * 16)
    assert decode_unverified(text[:-1] + "!") is None
    assert decode_unverified("x" * 65) is None
