"""Albums, copies and forwards through server and worker: uploads go to Telegram once, then
by file_id; every call is spec-valid."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import aiohttp
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import text

from tests.fixtures.content import PHOTO, VIDEO
from tests.fixtures.rest import get, post
from tests.fixtures.stack import Stack
from tests.fixtures.telegram import BOT_ID, spec_problems
from tests.fixtures.watching import assert_watch_complete, watch
from tgbroadcast.core.store import create_engine
from tgbroadcast.simulator import ChatState, ChatType
from tgbroadcast.v1 import broadcast_pb2 as pb


async def test_album_with_uploads_then_by_file_id(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    recipients = [71, 72, 73]
    async with stack.stub() as stub:
        sent = await stub.SendMessage(
            pb.SendMessageRequest(
                media_type=pb.MEDIA_TYPE_ALBUM,
                parse_mode=pb.PARSE_MODE_HTML,
                album=[
                    pb.AlbumItem(
                        media_type=pb.MEDIA_TYPE_PHOTO,
                        media_data=b"\x89PNG fake photo bytes",
                        media_filename="cat.png",
                        caption="<b>one</b>",
                        has_spoiler=True,
                    ),
                    pb.AlbumItem(media_type=pb.MEDIA_TYPE_VIDEO, media_url=VIDEO, caption="two"),
                    pb.AlbumItem(
                        media_type=pb.MEDIA_TYPE_PHOTO,
                        media_data=b"second upload",
                        media_filename="dog.jpg",
                    ),
                ],
                disable_notification=True,
                user_ids=recipients,
            ),
            metadata=stack.metadata,
        )
    results = assert_watch_complete(await watch(stack, sent.broadcast_id), set(recipients))
    calls = stack.simulator.calls
    assert [c.method for c in calls] == ["sendMediaGroup"] * 3
    assert all(c.ok for c in calls), calls
    first, *later = calls
    assert first.media == "upload"
    assert [c.media for c in later] == ["file_id", "file_id"]
    for call in calls:
        items = call.params["media"]
        assert [i["type"] for i in items] == ["photo", "video", "photo"]
        assert items[0]["caption"] == "<b>one</b>"
        assert items[0]["parse_mode"] == "HTML"
        assert items[0]["has_spoiler"] is True
        assert "caption" not in items[2]
        assert call.params["disable_notification"] is True
        assert spec_problems(dict(call.params), "sendMediaGroup") == []
        # The message id recorded is the album's first message; message_ids has every item's.
        result = results[int(call.params["chat_id"])]
        assert result.message_id == call.result[0]["message_id"]
        assert list(result.message_ids) == [m["message_id"] for m in call.result]
        assert len(result.message_ids) == 3
    received = stack.simulator.messages_by_chat(BOT_ID)[72]
    assert len(received) == 3
    assert received[0]["caption"] == "one"
    assert len({m["media_group_id"] for m in received}) == 1


async def test_album_over_rest_with_base64_upload(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    status, body = await post(
        stack,
        "/send-message",
        {
            "media_type": "album",
            "album": [
                {
                    "media_type": "document",
                    "media_data": base64.b64encode(b"%PDF-1.4").decode(),
                    "media_filename": "a.pdf",
                    "caption": "A",
                },
                {"media_type": "document", "media_url": "https://example.com/b.pdf"},
            ],
            "user_ids": [81],
        },
    )
    assert status == 202, body
    assert_watch_complete(await watch(stack, body["broadcast_id"]), {81})
    (call,) = stack.simulator.calls
    assert call.ok
    assert call.media == "upload"
    assert [m.get("document", {}).get("file_name") for m in call.result] == ["a.pdf", "b.pdf"]
    ids = [m["message_id"] for m in call.result]
    status, page = await get(stack, f"/v1/broadcasts/{body['broadcast_id']}/deliveries")
    assert status == 200
    ((delivery,),) = [page["results"]]
    assert (delivery["message_id"], delivery["message_ids"]) == (ids[0], ids)
    csv_url = f"{stack.http_url}/v1/broadcasts/{body['broadcast_id']}/deliveries.csv"
    async with aiohttp.ClientSession() as session, session.get(csv_url, headers=stack.auth) as got:
        assert got.status == 200
        csv_text = await got.text()
    header, row = csv_text.strip().splitlines()
    column = header.split(",").index("message_ids")
    assert row.split(",")[column] == " ".join(map(str, ids))
    status, bad = await post(
        stack,
        "/send-message",
        {
            "media_type": "album",
            "album": [
                {"media_type": "photo", "media_url": PHOTO},
                {"media_type": "photo", "media_url": PHOTO},
                {"media_type": "photo", "media_url": PHOTO},
                {"media_type": "photo", "media_url": PHOTO, "caption": "c" * 1025},
            ],
            "user_ids": [81],
        },
    )
    assert status == 400
    assert bad["errors"] == [
        {
            "field": "album[3].caption",
            "message": "is 1025 characters; a caption may have at most 1024",
        }
    ]
    status, bad = await post(
        stack,
        "/send-message",
        {
            "media_type": "album",
            "album": [{"media_type": "photo", "media_data": "!!"}] * 2,
            "user_ids": [1],
        },
    )
    assert (status, bad["errors"][0]["field"]) == (400, "album[0].media_data")


async def test_copy_and_forward_of_a_channel_post(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    channel = -1001234567890
    stack.simulator.chats.declare(channel, chat_type=ChatType.CHANNEL)
    post_id = stack.simulator.post_message(bot_id=BOT_ID, chat_id=channel, text="Channel news")[
        "message_id"
    ]
    status, copied = await post(
        stack,
        "/send-message",
        {
            "media_type": "copy",
            "source": {"from_chat_id": channel, "message_id": post_id},
            "reply_markup": {"rows": [{"buttons": [{"text": "More", "url": "https://t.me/x"}]}]},
            "protect_content": True,
            "allow_paid_broadcast": True,
            "user_ids": [91, 92],
        },
    )
    assert status == 202, copied
    status, forwarded = await post(
        stack,
        "/send-message",
        {
            "media_type": "forward",
            "source": {"from_chat_id": channel, "message_id": post_id},
            "disable_notification": True,
            "user_ids": [93],
        },
    )
    assert status == 202, forwarded
    status, missing = await post(
        stack,
        "/send-message",
        {
            "media_type": "copy",
            "source": {"from_chat_id": channel, "message_id": 999},
            "user_ids": [94],
        },
    )
    assert status == 202
    assert_watch_complete(await watch(stack, copied["broadcast_id"]), {91, 92})
    assert_watch_complete(await watch(stack, forwarded["broadcast_id"]), {93})
    lost = assert_watch_complete(await watch(stack, missing["broadcast_id"]), {94})
    assert lost[94].outcome == pb.DELIVERY_OUTCOME_BAD_REQUEST
    assert lost[94].error == "Bad Request: message to copy not found"

    copies = [c for c in stack.simulator.calls if c.method == "copyMessage" and c.ok]
    assert sorted(int(c.params["chat_id"]) for c in copies) == [91, 92]
    for call in copies:
        assert (call.params["from_chat_id"], call.params["message_id"]) == (channel, post_id)
        assert call.params["reply_markup"] == {
            "inline_keyboard": [[{"text": "More", "url": "https://t.me/x"}]]
        }
        assert call.params["protect_content"] is True
        assert call.params["allow_paid_broadcast"] is True
        assert "caption" not in call.params
        assert spec_problems(dict(call.params), "copyMessage") == []
    (forward,) = [c for c in stack.simulator.calls if c.method == "forwardMessage"]
    assert forward.ok
    assert forward.params["disable_notification"] is True
    assert spec_problems(dict(forward.params), "forwardMessage") == []
    by_chat = stack.simulator.messages_by_chat(BOT_ID)
    assert by_chat[91][0]["text"] == "Channel news"
    assert "forward_origin" not in by_chat[91][0]
    assert by_chat[93][0]["text"] == "Channel news"
    assert by_chat[93][0]["forward_origin"]["message_id"] == post_id


async def test_copy_with_a_new_caption(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    async with stack.stub() as stub:
        photo = await stub.SendMessage(
            pb.SendMessageRequest(media_type=pb.MEDIA_TYPE_PHOTO, media_url=PHOTO, user_ids=[101]),
            metadata=stack.metadata,
        )
        assert_watch_complete(await watch(stack, photo.broadcast_id), {101})
        original = stack.simulator.messages_by_chat(BOT_ID)[101][0]["message_id"]
        copy = await stub.SendMessage(
            pb.SendMessageRequest(
                media_type=pb.MEDIA_TYPE_COPY,
                message="<u>new</u> caption",
                parse_mode=pb.PARSE_MODE_HTML,
                source=pb.MessageRef(from_chat_id=101, message_id=original),
                user_ids=[102],
            ),
            metadata=stack.metadata,
        )
    assert_watch_complete(await watch(stack, copy.broadcast_id), {102})
    call = stack.simulator.calls[-1]
    assert (call.method, call.params["caption"], call.params["parse_mode"]) == (
        "copyMessage",
        "<u>new</u> caption",
        "HTML",
    )
    shown = stack.simulator.messages_by_chat(BOT_ID)[102][0]
    assert shown["caption"] == "new caption"
    assert shown["caption_entities"] == [{"type": "underline", "offset": 0, "length": 3}]
    assert "photo" in shown


async def test_an_upload_no_longer_kept_fails_its_recipients_instead_of_retrying(
    sqlite_stack: Stack,
) -> None:
    """Uploads are kept 7 days (or lost with NATS's data): a broadcast that comes due after
    its upload is gone fails each recipient with the reason, and the circuit breaker stops a
    large one, instead of a job redelivered forever."""
    stack = sqlite_stack
    async with stack.stub() as stub:
        sent = await stub.SendMessage(
            pb.SendMessageRequest(
                media_type=pb.MEDIA_TYPE_DOCUMENT,
                media_data=b"%PDF-1.4 gone",
                media_filename="gone.pdf",
                user_ids=[81, 82, 83],
                send_at=Timestamp(seconds=4_102_444_800),  # 2100: due only when moved below
            ),
            metadata=stack.metadata,
        )
    queue = stack.running.backends.queue
    media = await queue.jetstream.object_store(queue.names.media_bucket)
    for info in await media.list():
        await media.delete(info.name)
    engine = create_engine(stack.settings.database.url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text("UPDATE broadcasts SET send_at = :now WHERE id = :id"),
                {"now": datetime.now(UTC), "id": sent.broadcast_id},
            )
    finally:
        await engine.dispose()
    results = assert_watch_complete(await watch(stack, sent.broadcast_id), {81, 82, 83})
    assert {r.outcome for r in results.values()} == {pb.DELIVERY_OUTCOME_BAD_REQUEST}
    assert all("no longer kept" in r.error for r in results.values())
    assert stack.simulator.calls == ()


async def test_a_copy_from_a_channel_the_bot_left_is_a_content_error(sqlite_stack: Stack) -> None:
    """Telegram checks a copy's source chat first: with the bot kicked from the channel,
    every recipient is refused "bot was kicked from the channel chat". To a private chat that
    can only be the source's fault: a content error (`bad_request`, counted by the content
    circuit breaker), not each user's outcome `kicked`; to a group, it is the group's own
    outcome as before."""
    stack = sqlite_stack
    channel = -1001234567891
    stack.simulator.chats.declare(channel, chat_type=ChatType.CHANNEL)
    post_id = stack.simulator.post_message(bot_id=BOT_ID, chat_id=channel, text="Gone")[
        "message_id"
    ]
    stack.simulator.chats.declare(channel, ChatState.KICKED, chat_type=ChatType.CHANNEL)
    source = {"from_chat_id": channel, "message_id": post_id}
    users = list(range(301, 307))
    status, copied = await post(
        stack, "/send-message", {"media_type": "copy", "source": source, "user_ids": users}
    )
    assert status == 202, copied
    results = assert_watch_complete(await watch(stack, copied["broadcast_id"]), set(users))
    refused = "Forbidden: bot was kicked from the channel chat"
    assert {(r.outcome, r.error) for r in results.values()} == {
        (pb.DELIVERY_OUTCOME_BAD_REQUEST, refused)
    }

    group = -4242
    status, to_group = await post(
        stack, "/send-message", {"media_type": "copy", "source": source, "user_ids": [group]}
    )
    assert status == 202, to_group
    results = assert_watch_complete(await watch(stack, to_group["broadcast_id"]), {group})
    assert (results[group].outcome, results[group].error) == (pb.DELIVERY_OUTCOME_KICKED, refused)
