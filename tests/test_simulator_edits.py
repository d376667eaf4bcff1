"""The Bot API simulator after sending, over real HTTP: deleteMessage(s) and the editMessage*
methods, the 48-hour delete window (made to pass with the control route
``POST /_sim/messages/age``), "not modified", the album kind rule, and flood control counting
deletes and edits like sends."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest, TelegramRetryAfter
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from tests.fixtures.telegram import BOT_ID, PHOTO_URL, call, conforms, failure
from tests.fixtures.telegram import http as http_fixture  # noqa: F401 -- fixture "http"
from tgbroadcast.simulator import ChatState, ChatType, Limit, RateLimits, Simulator

HOURS_48 = 48 * 3600
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)
KEYBOARD = {"inline_keyboard": [[{"text": "Open", "url": "https://example.com/a"}]]}
OTHER_KEYBOARD = {"inline_keyboard": [[{"text": "Vote", "callback_data": "v1"}]]}
VIDEO_URL = "https://example.com/clips/dog.mp4"
PHOTO_MEDIA = {"type": "photo", "media": PHOTO_URL}


class Api:
    """Raw Bot API calls to one simulator, and its ``/_sim/messages/age`` control route."""

    def __init__(self, http: aiohttp.ClientSession, sim: Simulator) -> None:
        self.http = http
        self.sim = sim

    async def ok(self, method: str, **params: Any) -> Any:
        """The result of a call that must succeed."""
        status, body = await call(self.http, self.sim, method, json=params)
        assert status == 200, body
        return body["result"]

    async def refused(self, method: str, **params: Any) -> tuple[int, str]:
        """(error_code, description) of a call that must fail."""
        status, body = await call(self.http, self.sim, method, json=params)
        return failure(status, body)

    async def age(self, **body: Any) -> tuple[int, dict[str, Any]]:
        """``POST /_sim/messages/age``: the HTTP status and the answer."""
        url = f"{self.sim.api_url}/_sim/messages/age"
        async with self.http.post(url, json=body) as response:
            return response.status, await response.json()


@pytest.fixture(name="api")
def api_fixture(http: aiohttp.ClientSession, simulator: Simulator) -> Api:
    return Api(http, simulator)


def bad(description: str) -> tuple[int, str]:
    """A 400 refusal with ``description``."""
    return 400, f"Bad Request: {description}"


def stored(sim: Simulator, chat_id: int) -> dict[int, dict[str, Any]]:
    """The messages the simulator keeps in ``chat_id``, by id."""
    return {m["message_id"]: m for m in sim.messages_by_chat().get(chat_id, [])}


# ---- deleting ----


async def test_delete_message_removes_it_and_its_id_is_never_reused(
    simulator: Simulator, bot: Bot
) -> None:
    first = await bot.send_message(10, "one")
    await bot.send_message(10, "two")
    assert await bot.delete_message(10, first.message_id) is True
    assert list(stored(simulator, 10)) == [2]
    with pytest.raises(TelegramBadRequest) as again:
        await bot.delete_message(10, first.message_id)
    assert again.value.message == "Bad Request: message to delete not found"
    with pytest.raises(TelegramBadRequest) as unknown:
        await bot.delete_message(10, 99)
    assert unknown.value.message == "Bad Request: message to delete not found"
    assert (await bot.send_message(10, "three")).message_id == 3
    assert [c.ok for c in simulator.calls if c.method == "deleteMessage"] == [True, False, False]


async def test_a_message_older_than_48_hours_cant_be_deleted(
    api: Api, simulator: Simulator
) -> None:
    for text in ("old", "recent"):
        await api.ok("sendMessage", chat_id=11, text=text)
    sent_date = stored(simulator, 11)[1]["date"]
    status, answer = await api.age(chat_id=11, seconds=HOURS_48, message_ids=[1])
    assert (status, answer) == (200, {"aged": 1})
    assert stored(simulator, 11)[1]["date"] == sent_date - HOURS_48
    assert await api.refused("deleteMessage", chat_id=11, message_id=1) == bad(
        "message can't be deleted"
    )
    assert 1 in stored(simulator, 11)
    # Just under 48 hours: still deletable.
    status, answer = await api.age(chat_id=11, seconds=HOURS_48 - 60, message_ids=[2])
    assert answer == {"aged": 1}
    assert await api.ok("deleteMessage", chat_id=11, message_id=2) is True
    assert list(stored(simulator, 11)) == [1]
    # Edits of the bot's own messages have no age limit.
    edited = await api.ok("editMessageText", chat_id=11, message_id=1, text="old, edited")
    assert edited["text"] == "old, edited"


async def test_aging_takes_a_bot_and_ids_and_refuses_bad_bodies(
    api: Api, simulator: Simulator
) -> None:
    other_bot = 555
    simulator.post_message(bot_id=other_bot, chat_id=12, text="someone else's")
    sent: dict[int, int] = {}
    for _ in range(3):
        message = await api.ok("sendMessage", chat_id=12, text="x")
        sent[message["message_id"]] = message["date"]
    assert (await api.age(chat_id=12, seconds=10))[1] == {"aged": 4}
    assert (await api.age(chat_id=12, seconds=10, bot_id=BOT_ID))[1] == {"aged": 3}
    status, answer = await api.age(chat_id=12, seconds=HOURS_48, bot_id=BOT_ID, message_ids=[2, 7])
    assert answer == {"aged": 1}
    dates = {m["message_id"]: m["date"] for m in simulator.messages_by_chat(BOT_ID)[12]}
    assert [dates[i] - sent[i] for i in (1, 2, 3)] == [-20, -20 - HOURS_48, -20]
    assert (await api.age(chat_id=13, seconds=1))[1] == {"aged": 0}
    for body in ({"chat_id": 12}, {"chat_id": 12, "seconds": -1}, {"seconds": 5}):
        status, error = await api.age(**body)
        assert status == 400
        assert error["error"]
    status, error = await api.age(chat_id=12, seconds=1, message_ids="1")
    assert (status, error["error"]) == (400, "TypeError: message_ids must be a list of integers")


async def test_delete_messages_skips_what_it_cant_find_or_delete(
    api: Api, simulator: Simulator
) -> None:
    for _ in range(4):
        await api.ok("sendMessage", chat_id=14, text="x")
    await api.age(chat_id=14, seconds=HOURS_48 + 1, message_ids=[2])
    ids = [1, 2, 3, 99, 1]
    assert await api.ok("deleteMessages", chat_id=14, message_ids=ids) is True
    assert list(stored(simulator, 14)) == [2, 4]
    # Nothing left to delete among these: still true.
    assert await api.ok("deleteMessages", chat_id=14, message_ids=[1, 3]) is True
    assert list(stored(simulator, 14)) == [2, 4]
    many = list(range(1, 101))
    assert await api.ok("deleteMessages", chat_id=14, message_ids=many) is True
    assert list(stored(simulator, 14)) == [2]


def _ids(value: Any) -> dict[str, Any]:
    return {"chat_id": 15, "message_ids": value}


@pytest.mark.parametrize(
    ("method", "params", "description"),
    [
        ("deleteMessages", {"chat_id": 15}, "message identifiers are not specified"),
        ("deleteMessages", _ids([]), "message identifiers are not specified"),
        ("deleteMessages", _ids(list(range(1, 102))), "too many message identifiers specified"),
        ("deleteMessages", _ids([1, 0]), "invalid message identifier specified"),
        ("deleteMessages", _ids(["x"]), 'field "message_ids" must be a valid Number'),
        ("deleteMessages", {"message_ids": [1]}, "chat_id is empty"),
        ("deleteMessage", {"message_id": 1}, "chat identifier is not specified"),
        ("deleteMessage", {"chat_id": 15}, "message identifier is not specified"),
        ("deleteMessage", {"chat_id": 15, "message_id": -1}, "message identifier is not specified"),
    ],
)
async def test_delete_refusals_use_telegrams_texts(
    api: Api,
    simulator: Simulator,
    method: str,
    params: dict[str, Any],
    description: str,
) -> None:
    await api.ok("sendMessage", chat_id=15, text="kept")
    assert await api.refused(method, **params) == bad(description)
    assert list(stored(simulator, 15)) == [1]


async def test_deletes_and_edits_follow_the_chat_not_the_users_block(
    api: Api, simulator: Simulator
) -> None:
    for chat_id in (16, -1600):
        await api.ok("sendMessage", chat_id=chat_id, text="a")
        await api.ok("sendMessage", chat_id=chat_id, text="b")
    simulator.chats.declare(16, ChatState.BLOCKED)
    edited = await api.ok("editMessageText", chat_id=16, message_id=1, text="a2")
    assert edited["text"] == "a2"
    assert await api.ok("deleteMessage", chat_id=16, message_id=2) is True
    simulator.chats.declare(-1600, ChatState.KICKED)
    kicked = (403, "Forbidden: bot was kicked from the group chat")
    target = {"chat_id": -1600, "message_id": 1}
    assert await api.refused("deleteMessage", **target) == kicked
    assert await api.refused("editMessageText", **target, text="z") == kicked
    assert list(stored(simulator, -1600)) == [1, 2]
    assert await api.refused("deleteMessage", chat_id="nobody", message_id=1) == bad(
        "chat not found"
    )


# ---- editing ----


async def test_edit_message_text_answers_and_stores_the_edited_message(
    api: Api, simulator: Simulator
) -> None:
    sent = await api.ok("sendMessage", chat_id=20, text="draft", reply_markup=KEYBOARD)
    assert "edit_date" not in sent
    edited = await api.ok(
        "editMessageText",
        chat_id=20,
        message_id=sent["message_id"],
        text="<b>final</b> https://t.me",
        parse_mode="HTML",
        link_preview_options={"is_disabled": True},
        reply_markup=OTHER_KEYBOARD,
    )
    assert conforms("Message", edited)
    assert edited["message_id"] == sent["message_id"]
    assert edited["date"] == sent["date"]
    assert edited["edit_date"] >= sent["date"]
    assert edited["text"] == "final https://t.me"
    assert edited["entities"] == [{"type": "bold", "offset": 0, "length": 5}]
    assert edited["link_preview_options"] == {"is_disabled": True}
    assert edited["reply_markup"] == OTHER_KEYBOARD
    assert stored(simulator, 20)[1] == edited
    # What was answered to the send stays as it was answered.
    assert simulator.select_calls(method="sendMessage")[0].result["text"] == "draft"
    # An edit without reply_markup removes the keyboard; without entities, the formatting.
    plain = await api.ok("editMessageText", chat_id=20, message_id=1, text="final https://t.me")
    assert "reply_markup" not in plain
    assert "entities" not in plain
    assert "link_preview_options" not in plain


async def test_edits_through_aiogram(simulator: Simulator, bot: Bot) -> None:
    message = await bot.send_photo(21, PHOTO_URL, caption="before")
    markup = InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text="Go", url="https://example.com/go")]]
    )
    edited = await bot.edit_message_caption(
        chat_id=21, message_id=message.message_id, caption="*after*", parse_mode="MarkdownV2"
    )
    assert not isinstance(edited, bool)
    assert edited.caption == "after"
    assert edited.edit_date is not None
    edited = await bot.edit_message_reply_markup(
        chat_id=21, message_id=message.message_id, reply_markup=markup
    )
    assert not isinstance(edited, bool)
    assert edited.reply_markup is not None
    assert edited.reply_markup.model_dump(exclude_none=True) == markup.model_dump(exclude_none=True)
    assert edited.caption == "after"
    with pytest.raises(TelegramBadRequest) as same:
        await bot.edit_message_reply_markup(
            chat_id=21, message_id=message.message_id, reply_markup=markup
        )
    assert same.value.message == NOT_MODIFIED


async def test_caption_edits_set_and_remove_the_caption(api: Api, simulator: Simulator) -> None:
    await api.ok("sendPhoto", chat_id=22, photo=PHOTO_URL, reply_markup=KEYBOARD)
    target = {"chat_id": 22, "message_id": 1}
    edited = await api.ok("editMessageCaption", **target, caption="<i>new</i>", parse_mode="HTML")
    assert edited["caption"] == "new"
    assert edited["caption_entities"] == [{"type": "italic", "offset": 0, "length": 3}]
    assert "reply_markup" not in edited
    assert edited["photo"] == stored(simulator, 22)[1]["photo"]
    removed = await api.ok("editMessageCaption", **target)
    assert "caption" not in removed
    assert "caption_entities" not in removed
    assert await api.refused("editMessageCaption", **target) == (400, NOT_MODIFIED)


async def test_identical_edits_are_not_modified(api: Api, simulator: Simulator) -> None:
    await api.ok("sendMessage", chat_id=23, text="hi", reply_markup=KEYBOARD)
    photo = await api.ok(
        "sendPhoto",
        chat_id=23,
        photo=PHOTO_URL,
        caption="c",
        reply_markup=KEYBOARD,
    )
    text = {"chat_id": 23, "message_id": 1, "reply_markup": KEYBOARD}
    media = {"chat_id": 23, "message_id": 2, "reply_markup": KEYBOARD}
    same_photo = {"type": "photo", "media": photo["photo"][0]["file_id"], "caption": "c"}
    for method, params in [
        ("editMessageText", text | {"text": "hi"}),
        ("editMessageText", text | {"text": "hi", "parse_mode": "HTML"}),
        ("editMessageReplyMarkup", text),
        ("editMessageCaption", media | {"caption": "c"}),
        ("editMessageMedia", media | {"media": same_photo}),
    ]:
        assert await api.refused(method, **params) == (400, NOT_MODIFIED), method
    before = stored(simulator, 23)
    assert all("edit_date" not in message for message in before.values())
    # Formatting alone is a change.
    edited = await api.ok("editMessageText", **text, text="<b>hi</b>", parse_mode="HTML")
    assert edited["entities"] == [{"type": "bold", "offset": 0, "length": 2}]


async def test_editing_a_missing_or_deleted_message(api: Api, simulator: Simulator) -> None:
    await api.ok("sendPhoto", chat_id=24, photo=PHOTO_URL, caption="c")
    assert await api.ok("deleteMessage", chat_id=24, message_id=1) is True
    not_found = (400, "Bad Request: message to edit not found")
    video = {"type": "video", "media": VIDEO_URL}
    for message_id in (1, 99):
        target = {"chat_id": 24, "message_id": message_id}
        assert await api.refused("editMessageText", **target, text="t") == not_found
        assert await api.refused("editMessageCaption", **target, caption="c") == not_found
        assert await api.refused("editMessageReplyMarkup", **target) == not_found
        assert await api.refused("editMessageMedia", **target, media=video) == not_found
    assert await api.refused("editMessageText", chat_id=24, text="t") == not_found
    assert await api.refused("editMessageText", message_id=1, text="t") == bad("chat_id is empty")
    assert await api.refused("editMessageText", text="t") == bad(
        "message identifier is not specified"
    )
    inline = await api.refused("editMessageText", inline_message_id="AgAAAB8", text="t")
    assert inline == bad("the simulator does not edit inline messages: pass chat_id and message_id")
    assert stored(simulator, 24) == {}


UNSUPPORTED_TAG = 'can\'t parse entities: Unsupported start tag "foo" at byte offset 0'
LONG_CAPTION = "message caption is too long"
WRONG_FILE = "wrong file identifier/HTTP URL specified"
UNSUPPORTED = 'can\'t parse InputMedia: type "sticker" is unsupported'
NO_MEDIA = "can't parse InputMedia: media not found"
UNREACHABLE = "failed to get HTTP URL content"


def _ext(kind: str) -> str:
    """A file name extension Telegram fetches by URL for ``kind`` (documents: PDF)."""
    return "pdf" if kind == "document" else kind


DOWN_URL = "https://down.example.com/b.jpg"


async def test_edits_are_checked_like_sends(api: Api, simulator: Simulator) -> None:
    await api.ok("sendMessage", chat_id=25, text="text")
    await api.ok("sendPhoto", chat_id=25, photo=PHOTO_URL, caption="cap")
    before = stored(simulator, 25)
    text = {"chat_id": 25, "message_id": 1}
    media = {"chat_id": 25, "message_id": 2}
    bad_button = {"inline_keyboard": [[{"text": "x", "callback_data": "d" * 65}]]}
    photo = PHOTO_MEDIA
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("editMessageText", text | {"text": "x" * 4097}, "message is too long"),
        ("editMessageText", text | {"text": "  "}, "message text is empty"),
        ("editMessageText", text, "message text is empty"),
        ("editMessageText", text | {"text": "<foo>", "parse_mode": "HTML"}, UNSUPPORTED_TAG),
        ("editMessageText", text | {"text": "y", "parse_mode": "Fancy"}, "unsupported parse_mode"),
        ("editMessageReplyMarkup", text | {"reply_markup": bad_button}, "BUTTON_DATA_INVALID"),
        ("editMessageCaption", media | {"caption": "c" * 1025}, "message caption is too long"),
        ("editMessageMedia", media | {"media": photo | {"caption": "c" * 1025}}, LONG_CAPTION),
        ("editMessageMedia", media | {"media": photo | {"media": "nope"}}, WRONG_FILE),
        ("editMessageMedia", media | {"media": photo | {"type": "sticker"}}, UNSUPPORTED),
        ("editMessageMedia", media | {"media": {"type": "photo"}}, NO_MEDIA),
        ("editMessageMedia", media, 'parameter "media" is required'),
        ("editMessageMedia", media | {"media": photo | {"media": DOWN_URL}}, UNREACHABLE),
    ]
    simulator.fail_url(DOWN_URL)
    for method, params, description in cases:
        assert await api.refused(method, **params) == bad(description), params
    assert stored(simulator, 25) == before


async def test_text_and_caption_edits_need_a_text_and_a_caption(
    api: Api, simulator: Simulator
) -> None:
    await api.ok("sendMessage", chat_id=26, text="text")
    await api.ok("sendPhoto", chat_id=26, photo=PHOTO_URL)
    await api.ok("sendSticker", chat_id=26, sticker="https://example.com/s/cat.webp")
    await api.ok("sendVoice", chat_id=26, voice="https://example.com/v.ogg")
    no_text = (400, "Bad Request: there is no text in the message to edit")
    no_caption = (400, "Bad Request: there is no caption in the message to edit")
    assert await api.refused("editMessageText", chat_id=26, message_id=2, text="t") == no_text
    for message_id in (1, 3):
        assert (
            await api.refused("editMessageCaption", chat_id=26, message_id=message_id, caption="c")
            == no_caption
        )
    voice = await api.ok("editMessageCaption", chat_id=26, message_id=4, caption="voice caption")
    assert voice["caption"] == "voice caption"
    for message_id in (3, 4):
        target = {"chat_id": 26, "message_id": message_id}
        assert await api.refused("editMessageMedia", **target, media=PHOTO_MEDIA) == bad(
            "there is no media in the message to edit"
        )
    # A reply markup edits on any message.
    markup = await api.ok("editMessageReplyMarkup", chat_id=26, message_id=3, reply_markup=KEYBOARD)
    assert markup["reply_markup"] == KEYBOARD


async def test_edit_message_media_replaces_the_media(api: Api, simulator: Simulator) -> None:
    await api.ok("sendPhoto", chat_id=27, photo=PHOTO_URL, caption="photo")
    video = {"type": "video", "media": VIDEO_URL, "caption": "<b>video</b>", "parse_mode": "HTML"}
    edited = await api.ok(
        "editMessageMedia",
        chat_id=27,
        message_id=1,
        media=video,
        reply_markup=KEYBOARD,
    )
    assert conforms("Message", edited)
    assert "photo" not in edited
    assert edited["video"]["file_id"]
    assert (edited["caption"], edited["caption_entities"]) == (
        "video",
        [{"type": "bold", "offset": 0, "length": 5}],
    )
    assert edited["reply_markup"] == KEYBOARD
    # Back to a photo by a file_id this bot got: the same file, no caption, no keyboard.
    photo = await api.ok("sendPhoto", chat_id=28, photo=PHOTO_URL)
    by_id = {"type": "photo", "media": photo["photo"][-1]["file_id"]}
    again = await api.ok("editMessageMedia", chat_id=27, message_id=1, media=by_id)
    assert again["photo"] == photo["photo"]
    assert "video" not in again
    assert "caption" not in again
    assert "reply_markup" not in again
    assert stored(simulator, 27)[1] == again
    # A photo's file_id is no video.
    wrong = {"type": "video", "media": photo["photo"][-1]["file_id"]}
    assert await api.refused("editMessageMedia", chat_id=27, message_id=1, media=wrong) == bad(
        "can't use file of type Photo as Video"
    )
    edits = simulator.select_calls(method="editMessageMedia")
    assert [call.media for call in edits] == ["url", "file_id", None]


async def test_edit_message_media_by_upload_and_of_a_text(api: Api, simulator: Simulator) -> None:
    await api.ok("sendMessage", chat_id=29, text="soon a document")
    form = aiohttp.FormData()
    form.add_field("chat_id", "29")
    form.add_field("message_id", "1")
    form.add_field("media", json.dumps({"type": "document", "media": "attach://file"}))
    form.add_field("file", b"%PDF-1.7", filename="report.pdf", content_type="application/pdf")
    status, body = await call(api.http, simulator, "editMessageMedia", data=form)
    assert status == 200
    assert body["result"]["document"]["file_name"] == "report.pdf"
    assert body["result"]["document"]["file_size"] == len(b"%PDF-1.7")
    assert "text" not in body["result"]
    assert simulator.calls[-1].media == "upload"


@pytest.mark.parametrize(
    ("album", "item", "to", "allowed"),
    [
        (["photo", "video"], 0, "video", True),
        (["photo", "video"], 1, "photo", True),
        (["photo", "video"], 0, "document", False),
        (["photo", "video"], 1, "animation", False),
        (["photo", "video"], 0, "audio", False),
        (["document", "document"], 1, "document", True),
        (["document", "document"], 0, "photo", False),
        (["audio", "audio"], 0, "audio", True),
        (["audio", "audio"], 1, "video", False),
    ],
)
async def test_an_album_item_is_edited_only_to_its_albums_kind(
    api: Api,
    simulator: Simulator,
    album: list[str],
    item: int,
    to: str,
    allowed: bool,
) -> None:
    media = [
        {"type": kind, "media": f"https://example.com/a{i}.{_ext(kind)}"}
        for i, kind in enumerate(album)
    ]
    sent = await api.ok("sendMediaGroup", chat_id=30, media=media)
    target = {"chat_id": 30, "message_id": sent[item]["message_id"]}
    new = {"type": to, "media": f"https://example.com/new.{_ext(to)}", "caption": "new"}
    if allowed:
        edited = await api.ok("editMessageMedia", **target, media=new)
        assert edited[to]
        assert album[item] == to or album[item] not in edited
        assert edited["media_group_id"] == sent[item]["media_group_id"]
        assert edited["caption"] == "new"
    else:
        assert await api.refused("editMessageMedia", **target, media=new) == bad(
            "message can't be edited"
        )
        assert stored(simulator, 30)[target["message_id"]] == sent[item]


async def test_a_lone_media_message_takes_any_media(api: Api, simulator: Simulator) -> None:
    await api.ok("sendDocument", chat_id=31, document="https://example.com/a.pdf")
    for kind in ("photo", "audio", "animation", "video", "document"):
        new = {"type": kind, "media": f"https://example.com/x.{_ext(kind)}"}
        edited = await api.ok("editMessageMedia", chat_id=31, message_id=1, media=new)
        assert edited[kind]
        assert "media_group_id" not in edited


async def test_a_forwarded_message_cant_be_edited(api: Api, simulator: Simulator) -> None:
    simulator.chats.declare(-1003100000000, chat_type=ChatType.CHANNEL)
    post = simulator.post_message(bot_id=BOT_ID, chat_id=-1003100000000, text="post")
    await api.ok(
        "forwardMessage",
        chat_id=32,
        from_chat_id=-1003100000000,
        message_id=post["message_id"],
    )
    assert await api.refused("editMessageText", chat_id=32, message_id=1, text="changed") == bad(
        "message can't be edited"
    )
    edited = await api.ok("editMessageText", chat_id=-1003100000000, message_id=1, text="changed")
    assert edited["sender_chat"]["id"] == -1003100000000


# ---- flood control ----


async def test_deletes_and_edits_count_against_the_bots_limit(
    api: Api, simulator: Simulator
) -> None:
    simulator.rate_limits = RateLimits(bot=Limit(4, 60.0))
    for chat_id in (40, 41):
        await api.ok("sendMessage", chat_id=chat_id, text="x")
    # Refused deletes and edits count nothing ...
    for _ in range(3):
        assert (await api.refused("deleteMessage", chat_id=41, message_id=9))[0] == 400
        same = {"chat_id": 40, "message_id": 1, "text": "x"}
        assert await api.refused("editMessageText", **same) == (400, NOT_MODIFIED)
    # ... accepted ones count like sends: these two fill the window of four.
    await api.ok("editMessageText", chat_id=40, message_id=1, text="y")
    assert await api.ok("deleteMessage", chat_id=41, message_id=1) is True
    # Over the limit: each method is refused with retry_after, and nothing changes.
    for method, params in [
        ("editMessageText", {"chat_id": 40, "message_id": 1, "text": "z"}),
        ("editMessageReplyMarkup", {"chat_id": 40, "message_id": 1, "reply_markup": KEYBOARD}),
        ("editMessageMedia", {"chat_id": 40, "message_id": 1, "media": PHOTO_MEDIA}),
        ("deleteMessage", {"chat_id": 40, "message_id": 1}),
        ("deleteMessages", {"chat_id": 40, "message_ids": [1]}),
        ("sendMessage", {"chat_id": 42, "text": "x"}),
    ]:
        status, body = await call(api.http, simulator, method, json=params)
        status, description = failure(status, body)
        assert status == 429, method
        assert description.startswith("Too Many Requests: retry after ")
        assert 1 <= body["parameters"]["retry_after"] <= 60
    assert stored(simulator, 40)[1]["text"] == "y"
    assert "photo" not in stored(simulator, 40)[1]
    assert "reply_markup" not in stored(simulator, 40)[1]
    assert [c.method for c in simulator.calls if c.ok] == [
        "sendMessage",
        "sendMessage",
        "editMessageText",
        "deleteMessage",
    ]


async def test_edits_count_against_a_chats_limit(simulator: Simulator, bot: Bot) -> None:
    simulator.rate_limits = RateLimits(private_chat=Limit(2, 30.0))
    message = await bot.send_message(43, "one")
    await bot.edit_message_text("two", chat_id=43, message_id=message.message_id)
    with pytest.raises(TelegramRetryAfter) as edit:
        await bot.edit_message_text("three", chat_id=43, message_id=message.message_id)
    assert edit.value.retry_after == 30
    with pytest.raises(TelegramRetryAfter):
        await bot.delete_messages(43, [message.message_id])
    assert stored(simulator, 43)[1]["text"] == "two"
    # Another chat has its own window.
    other = await bot.send_message(44, "x")
    assert await bot.delete_message(44, other.message_id) is True
