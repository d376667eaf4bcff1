"""The Bot API simulator's messages and media, through aiogram's Bot and raw requests: media
by URL, file_id and upload, albums, copies, chat types; and the methods the service uses, as
the spec defines them."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import BufferedInputFile, InputMediaPhoto

from tests.fixtures.telegram import (
    BOT_ID,
    MEDIA_METHODS,
    OTHER_BOT_TOKEN,
    PHOTO_URL,
    aiogram_session,
    call,
    conforms,
    failure,
)
from tests.fixtures.telegram import http as http_fixture  # noqa: F401 -- fixture "http"
from tgbroadcast.simulator import ChatType, Simulator, default_spec

URL_EXTENSIONS = {"document": ".pdf", "sticker": ".webp"}


@pytest.mark.parametrize(("method", "field"), MEDIA_METHODS)
async def test_each_media_method_by_url_through_aiogram(
    simulator: Simulator, bot: Bot, method: str, field: str
) -> None:
    # Documents by URL only as GIF, PDF or ZIP, stickers only as .WEBP, video notes never.
    url = f"https://cdn.example.com/media/{field}" + URL_EXTENSIONS.get(field, ".bin")
    captioned = field not in ("video_note", "sticker")
    kwargs: dict[str, Any] = {"caption": f"{field} caption"} if captioned else {}
    sender = getattr(bot, f"send_{field}")
    if field == "video_note":
        with pytest.raises(TelegramBadRequest, match="wrong type of the web page content"):
            await sender(1001, url)
        return
    message = await sender(1001, url, **kwargs)
    raw = simulator.messages_by_chat()[1001][-1]
    assert conforms("Message", raw)
    assert raw[field]
    assert message.chat.id == 1001
    assert message.from_user is not None
    assert message.from_user.id == BOT_ID
    if captioned:
        assert message.caption == f"{field} caption"
    media = getattr(message, field)
    file_id = media[-1].file_id if field == "photo" else media.file_id
    expected = raw["photo"][-1]["file_id"] if field == "photo" else raw[field]["file_id"]
    assert file_id == expected
    assert simulator.calls[-1].media == "url"
    if field == "animation":
        assert message.document is not None
        assert message.document.file_id == file_id


async def test_photos_have_several_sizes_each_with_its_own_file_id(
    simulator: Simulator, bot: Bot
) -> None:
    message = await bot.send_photo(1, PHOTO_URL)
    assert message.photo is not None
    sizes = message.photo
    assert len(sizes) >= 3
    assert [s.width for s in sizes] == sorted(s.width for s in sizes)
    assert len({s.file_id for s in sizes}) == len(sizes)
    assert len({s.file_unique_id for s in sizes}) == len(sizes)
    assert all(len(s.file_id) > 60 for s in sizes)
    assert sizes[-1].file_id.startswith("AgAC")


async def test_file_id_reuse_sends_the_same_file(simulator: Simulator, bot: Bot) -> None:
    first = await bot.send_video(1, "https://example.com/clip.mp4", caption="one")
    assert first.video is not None
    again = await bot.send_video(2, first.video.file_id, caption="two")
    assert again.video is not None
    assert again.video.file_unique_id == first.video.file_unique_id
    assert [c.media for c in simulator.calls] == ["url", "file_id"]
    photo = await bot.send_photo(3, PHOTO_URL)
    assert photo.photo is not None
    smallest = await bot.send_photo(4, photo.photo[0].file_id)
    assert smallest.photo is not None
    assert smallest.photo[-1].file_unique_id == photo.photo[-1].file_unique_id


async def test_file_ids_are_per_bot_and_per_kind(simulator: Simulator, bot: Bot) -> None:
    photo = await bot.send_photo(1, PHOTO_URL)
    assert photo.photo is not None
    photo_id = photo.photo[-1].file_id
    with pytest.raises(TelegramBadRequest) as kind:
        await bot.send_video(1, photo_id)
    assert kind.value.message == "Bad Request: can't use file of type Photo as Video"
    async with Bot(OTHER_BOT_TOKEN, session=aiogram_session(simulator)) as other:
        with pytest.raises(TelegramBadRequest) as owner:
            await other.send_photo(1, photo_id)
    assert owner.value.message == "Bad Request: wrong file identifier/HTTP URL specified"


async def test_uploads_through_aiogram_and_same_content_same_unique_id(
    simulator: Simulator, bot: Bot
) -> None:
    data = b"OggS voice bytes"
    first = await bot.send_voice(1, BufferedInputFile(data, filename="v.ogg"))
    second = await bot.send_voice(2, BufferedInputFile(data, filename="v.ogg"))
    assert first.voice is not None
    assert second.voice is not None
    assert first.voice.file_id != second.voice.file_id
    assert first.voice.file_unique_id == second.voice.file_unique_id
    assert first.voice.file_size == len(data)
    assert [c.media for c in simulator.calls] == ["upload", "upload"]


async def test_unreachable_url_fails_to_fetch(simulator: Simulator, bot: Bot) -> None:
    simulator.fail_url("https://down.example.com/a.jpg")
    with pytest.raises(TelegramBadRequest) as error:
        await bot.send_photo(1, "https://down.example.com/a.jpg")
    assert error.value.message == "Bad Request: failed to get HTTP URL content"


async def test_message_ids_increase_per_chat_and_chat_types_follow_ids(
    simulator: Simulator, bot: Bot
) -> None:
    simulator.chats.declare(-1001234567890, chat_type=ChatType.CHANNEL)
    ids = [(await bot.send_message(chat, "m")).message_id for chat in (5, 5, 6, 5)]
    assert ids == [1, 2, 1, 3]
    group = await bot.send_message(-4242, "g")
    supergroup = await bot.send_message(-1009876543210, "s")
    channel = await bot.send_message(-1001234567890, "c")
    assert (group.chat.type, supergroup.chat.type, channel.chat.type) == (
        "group",
        "supergroup",
        "channel",
    )
    assert channel.from_user is None
    assert channel.sender_chat is not None
    assert channel.sender_chat.id == -1001234567890
    by_chat = simulator.messages_by_chat()
    assert [m["message_id"] for m in by_chat[5]] == [1, 2, 3]
    assert all(conforms("Message", m) for ms in by_chat.values() for m in ms)


async def test_copy_message_copies_content_with_a_new_caption(
    simulator: Simulator, bot: Bot
) -> None:
    original = await bot.send_photo(1, PHOTO_URL, caption="old")
    copied = await bot.copy_message(
        2, from_chat_id=1, message_id=original.message_id, caption="new"
    )
    stored = simulator.messages_by_chat()[2]
    assert stored[-1]["message_id"] == copied.message_id
    assert stored[-1]["caption"] == "new"
    assert stored[-1]["photo"] == simulator.messages_by_chat()[1][0]["photo"]
    text = await bot.send_message(1, "hello")
    await bot.copy_message(3, from_chat_id=1, message_id=text.message_id)
    assert simulator.messages_by_chat()[3][0]["text"] == "hello"


async def test_send_media_group(simulator: Simulator, bot: Bot) -> None:
    album = await bot.send_media_group(
        1,
        media=[
            InputMediaPhoto(media=BufferedInputFile(b"p1", filename="1.jpg"), caption="first"),
            InputMediaPhoto(media=PHOTO_URL),
        ],
    )
    assert [m.message_id for m in album] == [1, 2]
    assert album[0].media_group_id is not None
    assert album[0].media_group_id == album[1].media_group_id
    assert album[0].caption == "first"
    assert simulator.calls[-1].media == "upload"


async def test_send_media_group_rejections(
    http: aiohttp.ClientSession, simulator: Simulator
) -> None:
    photo = {"type": "photo", "media": PHOTO_URL}
    document = {"type": "document", "media": "https://example.com/a.pdf"}
    cases = [
        ([], "Bad Request: there are no messages to send"),
        ([photo] * 11, "Bad Request: too many messages to send as an album"),
        ([photo, document], "Bad Request: document can't be mixed with other media types"),
        (
            [{"type": "photo", "media": "attach://gone"}],
            "Bad Request: can't parse InputMedia: media not found",
        ),
    ]
    for media, description in cases:
        status, body = await call(
            http, simulator, "sendMediaGroup", data={"chat_id": "1", "media": json.dumps(media)}
        )
        assert failure(status, body) == (400, description)


_PAID = "allow_paid_broadcast"


_SERVICE_PARAMS = {
    "sendMessage": {"text", "parse_mode", "entities", "link_preview_options", "reply_markup"},
    "sendPhoto": {"photo", "caption", "parse_mode", "caption_entities", "reply_markup"},
    "sendVideo": {"video", "caption", "parse_mode", "caption_entities", "reply_markup"},
    "sendAnimation": {"animation", "caption", "parse_mode", "caption_entities", "reply_markup"},
    "sendDocument": {"document", "caption", "parse_mode", "caption_entities", "reply_markup"},
    "sendAudio": {"audio", "caption", "parse_mode", "caption_entities", "reply_markup"},
    "sendVoice": {"voice", "caption", "parse_mode", "caption_entities", "reply_markup"},
    "sendVideoNote": {"video_note", "reply_markup"},
    "sendSticker": {"sticker", "reply_markup"},
    "sendMediaGroup": {"media"},
    "copyMessage": {"from_chat_id", "message_id", "caption", "parse_mode", "reply_markup"},
    "forwardMessage": {"from_chat_id", "message_id"},
}


@pytest.mark.parametrize("method", sorted(_SERVICE_PARAMS))
def test_the_spec_has_every_parameter_the_service_sends(method: str) -> None:
    spec = default_spec().method(method)
    assert spec is not None
    names = {f.name for f in spec.fields}
    common = {"chat_id", "disable_notification", "protect_content"}
    assert _SERVICE_PARAMS[method] | common <= names
    # Paid broadcasts: every send the service makes but forwardMessage (TELEGRAM.md).
    assert (_PAID in names) is (method != "forwardMessage")
    assert ("reply_markup" in names) is (method not in ("sendMediaGroup", "forwardMessage"))


async def test_parameters_a_method_lacks_are_ignored(
    http: aiohttp.ClientSession, simulator: Simulator
) -> None:
    original = simulator.post_message(bot_id=BOT_ID, chat_id=-1001, text="post")
    forward = {"chat_id": 5, "from_chat_id": -1001, "message_id": original["message_id"]}
    status, body = await call(
        http, simulator, "forwardMessage", json=forward | {_PAID: True, "caption": "no"}
    )
    assert status == 200
    assert "caption" not in body["result"]
    assert _PAID not in simulator.calls[-1].params
    sticker_url = "https://example.com/stickers/cat.webp"
    sticker = {"chat_id": 5, "sticker": sticker_url, "caption": "stickers have none"}
    status, body = await call(http, simulator, "sendSticker", json=sticker | {_PAID: True})
    assert status == 200
    assert "caption" not in body["result"]
    assert simulator.calls[-1].params[_PAID] is True


async def test_paid_broadcast_flag_must_be_a_boolean(
    http: aiohttp.ClientSession, simulator: Simulator
) -> None:
    payload = {"chat_id": 1, "text": "x", _PAID: "yes"}
    status, body = await call(http, simulator, "sendMessage", json=payload)
    assert failure(status, body) == (
        400,
        'Bad Request: field "allow_paid_broadcast" must be of type Boolean',
    )


async def test_formatted_results_conform_to_the_spec(simulator: Simulator, bot: Bot) -> None:
    html = (
        "<b>b</b> <i>i</i> <u>u</u> <s>s</s> <tg-spoiler>p</tg-spoiler> <code>c</code> "
        '<pre><code class="language-py">x</code></pre> <a href="https://t.me">l</a> '
        '<a href="tg://user?id=42">m</a> <tg-emoji emoji-id="5368324170671202286">👍</tg-emoji> '
        '<tg-time unix="1647531900" format="t">t</tg-time> <blockquote expandable>q</blockquote>'
    )
    await bot.send_message(7, html, parse_mode="HTML")
    await bot.send_photo(7, PHOTO_URL, caption="*c*", parse_mode="MarkdownV2")
    sent = simulator.messages_by_chat()[7]
    kinds = {e["type"] for e in sent[0]["entities"]}
    assert kinds == {
        "bold", "italic", "underline", "strikethrough", "spoiler", "code", "pre", "text_link",
        "text_mention", "custom_emoji", "date_time", "expandable_blockquote",
    }  # fmt: skip
    assert sent[1]["caption_entities"] == [{"type": "bold", "offset": 0, "length": 1}]
    assert all(conforms("Message", message) for message in sent)


async def test_link_preview_options_are_kept_and_checked(
    http: aiohttp.ClientSession, simulator: Simulator
) -> None:
    options = {"is_disabled": True}
    payload = {"chat_id": 1, "text": "https://t.me", "link_preview_options": options}
    status, body = await call(http, simulator, "sendMessage", json=payload)
    assert status == 200
    assert body["result"]["link_preview_options"] == options
    payload["link_preview_options"] = "[1]"
    status, body = await call(http, simulator, "sendMessage", json=payload)
    assert failure(status, body) == (
        400,
        "Bad Request: can't parse link preview options JSON object",
    )
