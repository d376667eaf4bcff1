"""EditBroadcast end to end over real sockets, on every backend: each sent message edited with
the method its kind takes (text, caption, media, keyboard), personalized per recipient,
"message is not modified" counted as edited, ``not_found`` for a message gone; the outcomes
streamed by WatchBroadcast and SSE and shown in GetBroadcast, ListDeliveries and the CSV; an
edit mid-run gives the rest the new content; a worker killed mid-edit leaves nobody behind;
refused edits say why."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from tests.fixtures.cluster import AUTH, cluster, environ
from tests.fixtures.grpc_details import bad_request
from tests.fixtures.nats import wait_until
from tests.fixtures.stack import (
    Backend,
    Stack,
    on_sqlite,
    on_sqlite_and_postgres,
    start_stack,
)
from tests.fixtures.telegram import BOT_ID, PHOTO_URL, call, sends_by_chat, sent_at_least
from tests.fixtures.watching import watch, watch_into
from tests.test_recall import rest, send_and_finish, sse_events
from tgbroadcast.simulator import Simulator
from tgbroadcast.simulator.chats import ChatType
from tgbroadcast.v1 import broadcast_pb2 as pb
from tgbroadcast.worker.delivery import FOLLOW_UP_SLOTS

EDITS = {
    pb.EDIT_OUTCOME_EDITED: "edited",
    pb.EDIT_OUTCOME_NOT_FOUND: "not_found",
    pb.EDIT_OUTCOME_FAILED: "failed",
}
KEYBOARD = {"rows": [{"buttons": [{"text": "Open", "url": "https://example.com/sale"}]}]}


def edit_calls(simulator: Simulator, method: str = "editMessageText") -> Counter[int]:
    """Calls of ``method`` per chat, answered or refused."""
    return Counter(int(c.params["chat_id"]) for c in simulator.calls if c.method == method)


def last_message(simulator: Simulator, chat_id: int) -> dict[str, Any]:
    messages: list[dict[str, Any]] = simulator.messages_by_chat(BOT_ID)[chat_id]
    return messages[-1]


async def test_an_edit_reaches_every_sent_message_and_reports_each_outcome(
    stack: Stack, simulator: Simulator
) -> None:
    users = [31, 32, 33, 34]
    broadcast_id = await send_and_finish(stack, {"message": "50% off", "user_ids": users})
    code, page = await rest(stack, "GET", f"/v1/broadcasts/{broadcast_id}/deliveries")
    message_of = {d["user_id"]: d["message_id"] for d in page["results"]}
    async with aiohttp.ClientSession() as http:  # 34 deleted the message already
        status, _ = await call(
            http, simulator, "deleteMessage", json={"chat_id": 34, "message_id": message_of[34]}
        )
    assert status == 200

    body = {"message": "<b>15%</b> off", "parse_mode": "html", "reply_markup": KEYBOARD}
    code, edited = await rest(stack, "POST", f"/v1/broadcasts/{broadcast_id}/edit", body)
    assert code == 200, edited
    assert (edited["status"], edited["content_version"]) == ("completed", 2)
    assert edited["message"] == "<b>15%</b> off"
    assert edited["edit_at"] is not None
    assert edited["actions"][-1]["action"] == "edit"

    messages = await watch(stack, broadcast_id)
    *updates, closing = messages
    assert closing.progress.status == pb.BROADCAST_STATUS_COMPLETED
    assert closing.progress.edited == len(users)
    edits = [m.result for m in updates if m.result.edit != pb.EDIT_OUTCOME_UNSPECIFIED]
    assert Counter(r.user_id for r in edits) == dict.fromkeys(users, 1)  # each once
    expected = {31: "edited", 32: "edited", 33: "edited", 34: "not_found"}
    assert {r.user_id: EDITS[r.edit] for r in edits} == expected
    assert all(r.content_version == 2 for r in edits)
    for user in (31, 32, 33):
        message = last_message(simulator, user)
        assert message["text"] == "15% off"
        assert message["entities"] == [{"type": "bold", "offset": 0, "length": 3}]
        assert message["reply_markup"]["inline_keyboard"][0][0]["text"] == "Open"
        assert "edit_date" in message

    code, report = await rest(stack, "GET", f"/v1/broadcasts/{broadcast_id}")
    assert (report["editing"], report["edited"]) == (False, len(users))
    assert report["edit_counts"] == {"edited": 3, "not_found": 1}
    code, page = await rest(stack, "GET", f"/v1/broadcasts/{broadcast_id}/deliveries")
    assert {d["user_id"]: d["edit"] for d in page["results"]} == expected
    assert {d["content_version"] for d in page["results"]} == {2}
    code, csv_text = await rest(stack, "GET", f"/v1/broadcasts/{broadcast_id}/deliveries.csv")
    header, *rows = csv_text.strip().split("\r\n")
    assert header.endswith(",content_version,edit,edit_error,variant,clicks")
    columns = header.split(",")
    assert {int(r.split(",")[0]): r.split(",")[columns.index("edit")] for r in rows} == expected

    # The same content again: Telegram answers "message is not modified", counted edited.
    async with stack.stub() as stub:
        again = await stub.EditBroadcast(
            pb.EditBroadcastRequest(
                broadcast_id=broadcast_id,
                message="<b>15%</b> off",
                parse_mode=pb.PARSE_MODE_HTML,
                reply_markup=pb.InlineKeyboardMarkup(
                    rows=[
                        pb.InlineKeyboardRow(
                            buttons=[
                                pb.InlineKeyboardButton(text="Open", url="https://example.com/sale")
                            ]
                        )
                    ]
                ),
            ),
            metadata=stack.metadata,
        )
        assert again.broadcast.content_version == 3
        assert again.broadcast.editing
        closing = (await watch(stack, broadcast_id))[-1]
        got = await stub.GetBroadcast(
            pb.GetBroadcastRequest(broadcast_id=broadcast_id), metadata=stack.metadata
        )
        assert not got.broadcast.editing
        assert dict(got.broadcast.edit_counts) == {"edited": 3, "not_found": 1}
        listed = await stub.ListDeliveries(
            pb.ListDeliveriesRequest(broadcast_id=broadcast_id), metadata=stack.metadata
        )
        assert {r.user_id: EDITS[r.edit] for r in listed.results} == expected
    assert closing.progress.edited == len(users)
    not_modified = [
        c for c in simulator.calls if c.method == "editMessageText" and not c.ok and c.chat_id != 34
    ]
    assert len(not_modified) == 3

    async with aiohttp.ClientSession() as session, session.get(f"{stack.http_url}/metrics") as page:
        exposition = await page.text()
    assert 'tgb_edits_total{bot="default",outcome="edited"} 6.0' in exposition
    # A replay carries each recipient's edit on its one event.
    sse = await sse_events(stack, broadcast_id)
    assert [name for name, _ in sse] == ["result"] * len(users) + ["end"]
    assert {data["user_id"]: data["edit"] for _, data in sse[:-1]} == expected
    assert sse[-1][1]["progress"]["edited"] == len(users)


@on_sqlite
async def test_captions_media_keyboards_and_personalized_texts_are_edited_their_way(
    stack: Stack, simulator: Simulator
) -> None:
    photo = await send_and_finish(
        stack,
        {"message": "old", "media_type": "photo", "media_url": PHOTO_URL, "user_ids": [41]},
    )
    code, _ = await rest(stack, "POST", f"/v1/broadcasts/{photo}/edit", {"message": "new"})
    assert code == 200
    await watch(stack, photo)
    assert last_message(simulator, 41)["caption"] == "new"
    assert edit_calls(simulator, "editMessageCaption") == {41: 1}
    other = "https://example.com/pictures/dog.jpg"
    body = {"message": "a dog", "media_url": other}
    code, answer = await rest(stack, "POST", f"/v1/broadcasts/{photo}/edit", body)
    assert (code, answer["media_url"]) == (200, other)
    await watch(stack, photo)
    assert edit_calls(simulator, "editMessageMedia") == {41: 1}
    assert last_message(simulator, 41)["caption"] == "a dog"

    sticker = await send_and_finish(
        stack,
        {"media_type": "sticker", "media_url": "https://example.com/s.webp", "user_ids": [42]},
    )
    code, _ = await rest(
        stack, "POST", f"/v1/broadcasts/{sticker}/edit", {"reply_markup": KEYBOARD}
    )
    assert code == 200
    await watch(stack, sticker)
    assert edit_calls(simulator, "editMessageReplyMarkup") == {42: 1}
    assert last_message(simulator, 42)["reply_markup"]["inline_keyboard"][0][0]["text"] == "Open"

    async with aiohttp.ClientSession() as session:
        for user_id, name in ((43, "Ann"), (44, "Bob")):
            async with session.post(
                stack.http_url + "/v1/users",
                json={"users": [{"id": user_id, "first_name": name}]},
                headers=stack.auth,
            ) as response:
                assert response.status == 200, await response.text()
    greeting = await send_and_finish(
        stack, {"message": "Hi {first_name}", "personalize": True, "user_ids": [43, 44]}
    )
    code, _ = await rest(
        stack, "POST", f"/v1/broadcasts/{greeting}/edit", {"message": "Bye {first_name}"}
    )
    assert code == 200
    await watch(stack, greeting)
    assert last_message(simulator, 43)["text"] == "Bye Ann"
    assert last_message(simulator, 44)["text"] == "Bye Bob"


@on_sqlite
async def test_refused_edits_say_why_and_change_nothing(stack: Stack) -> None:
    text = await send_and_finish(stack, {"message": "x", "user_ids": [51]})
    path = f"/v1/broadcasts/{text}/edit"
    code, problem = await rest(stack, "POST", path, {"message": ""})
    assert code == 400
    assert problem["errors"][0]["field"] == "message"
    code, problem = await rest(stack, "POST", path, {"message": "y", "media_url": PHOTO_URL})
    assert code == 400
    assert problem["errors"][0]["field"] == "media_url"
    code, problem = await rest(stack, "POST", path, {"message": "y", "colour": "red"})
    assert code == 400
    assert problem["errors"][0]["field"] == "colour"
    async with stack.stub() as stub:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.EditBroadcast(
                pb.EditBroadcastRequest(
                    broadcast_id=text, message="<b>unclosed", parse_mode=pb.PARSE_MODE_HTML
                ),
                metadata=stack.metadata,
            )
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "can't parse entities" in bad_request(refused.value)["message"]
    code, report = await rest(stack, "GET", f"/v1/broadcasts/{text}")
    assert (report["content_version"], report["message"]) == (1, "x")  # nothing written

    voice = await send_and_finish(
        stack,
        {"media_type": "voice", "media_url": "https://example.com/a.ogg", "user_ids": [52]},
    )
    code, problem = await rest(
        stack, "POST", f"/v1/broadcasts/{voice}/edit", {"media_url": "https://example.com/b.ogg"}
    )
    assert code == 400
    assert "cannot be replaced" in problem["errors"][0]["message"]
    forward = await send_and_finish(
        stack,
        {
            "media_type": "forward",
            "source": {"from_chat_id": 51, "message_id": 1},
            "user_ids": [53],
        },
    )
    code, problem = await rest(stack, "POST", f"/v1/broadcasts/{forward}/edit", {"message": "z"})
    assert (code, problem["state"]) == (409, "forward")
    code, _ = await rest(stack, "POST", f"/v1/broadcasts/{text}/recall")
    assert code == 200
    code, problem = await rest(stack, "POST", path, {"message": "z"})
    assert code == 409
    assert problem["state"] in ("recalling", "recalled")
    code, problem = await rest(stack, "POST", "/v1/broadcasts/999999/edit", {"message": "z"})
    assert code == 404


@on_sqlite
async def test_an_edit_mid_run_gives_the_rest_the_new_content(
    backend: Backend, simulator: Simulator
) -> None:
    overrides = {"TGB_TELEGRAM_RATE_LIMIT": "20", "TGB_WORKER_CONCURRENCY": "4"}
    async with start_stack(backend, simulator, overrides) as stack:
        users = list(range(2000, 2150))
        code, accepted = await rest(
            stack, "POST", "/v1/broadcasts", {"message": "old", "user_ids": users}
        )
        assert code == 202
        broadcast_id = accepted["broadcast_id"]
        messages: list[pb.WatchBroadcastResponse] = []
        watching = asyncio.create_task(watch_into(messages, stack, broadcast_id))
        await wait_until(lambda: sent_at_least(simulator, 20))
        code, _ = await rest(
            stack, "POST", f"/v1/broadcasts/{broadcast_id}/edit", {"message": "new"}
        )
        assert code == 200
        await asyncio.wait_for(watching, 180)
    closing = messages[-1]
    assert closing.progress.status == pb.BROADCAST_STATUS_COMPLETED
    assert closing.progress.sent == len(users)
    assert sends_by_chat(simulator) == dict.fromkeys(users, 1)  # nobody sent twice
    chats = simulator.messages_by_chat(BOT_ID)
    assert {chats[u][-1]["text"] for u in users} == {"new"}
    old = {
        int(c.params["chat_id"])
        for c in simulator.calls
        if c.method == "sendMessage" and c.ok and c.params["text"] == "old"
    }
    assert 20 <= len(old) < len(users)
    assert set(edit_calls(simulator)) == old  # only those sent the old text were edited
    edited = [m.result.user_id for m in messages if m.result.edit]
    assert sorted(edited) == sorted(old)


@on_sqlite_and_postgres
async def test_a_worker_killed_mid_edit_leaves_nobody_behind(
    backend: Backend, tmp_path: Path
) -> None:
    """kill -9 of one of two workers while they edit: the other finishes; every sent
    recipient's edit is recorded once and carries the new text; only the edits in flight at
    the kill are made twice (answered "message is not modified", counted edited)."""
    concurrency = 4
    async with Simulator() as simulator:
        env = environ(
            backend,
            simulator,
            TGB_TELEGRAM_RATE_LIMIT="40",
            TGB_WORKER_CONCURRENCY=str(concurrency),
        )
        async with cluster(env, tmp_path) as services:
            _, *workers = await asyncio.gather(
                services.server(), services.worker(), services.worker()
            )
            users = list(range(4001, 4201))
            broadcast_id = await services.send(users)
            assert (await services.watch(broadcast_id))[-1].progress.status == (
                pb.BROADCAST_STATUS_COMPLETED
            )
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    f"{services.http_url}/v1/broadcasts/{broadcast_id}/edit",
                    json={"message": "corrected"},
                    headers=AUTH,
                ) as response,
            ):
                assert response.status == 200
            await wait_until(lambda: _edited_at_least(simulator, 40))
            await workers[0].kill()
            messages = await services.watch(broadcast_id)
    closing = messages[-1]
    assert closing.progress.edited == len(users)
    edits = [m.result for m in messages[:-1] if m.result.edit]
    assert Counter(r.user_id for r in edits) == dict.fromkeys(users, 1)
    assert {EDITS[r.edit] for r in edits} == {"edited"}
    chats = simulator.messages_by_chat(BOT_ID)
    assert {chats[u][-1]["text"] for u in users} == {"corrected"}
    made = edit_calls(simulator)
    assert set(made) == set(users)
    assert sum(n - 1 for n in made.values()) <= FOLLOW_UP_SLOTS * concurrency


async def _edited_at_least(simulator: Simulator, count: int) -> bool:
    return sum(sends_by_chat(simulator, "editMessageText").values()) >= count


@on_sqlite
async def test_an_album_caption_and_a_copy_of_a_text_are_edited(
    stack: Stack, simulator: Simulator
) -> None:
    album = [
        {"media_type": "photo", "media_url": "https://example.com/a.jpg", "caption": "old"},
        {"media_type": "photo", "media_url": "https://example.com/b.jpg"},
    ]
    sent = await send_and_finish(stack, {"media_type": "album", "album": album, "user_ids": [61]})
    code, _ = await rest(stack, "POST", f"/v1/broadcasts/{sent}/edit", {"message": "new"})
    assert code == 200
    await watch(stack, sent)
    first, second = simulator.messages_by_chat(BOT_ID)[61][-2:]
    assert (first["caption"], "caption" in second) == ("new", False)
    code, problem = await rest(
        stack, "POST", f"/v1/broadcasts/{sent}/edit", {"message": "x", "reply_markup": KEYBOARD}
    )
    assert (code, problem["errors"][0]["field"]) == (400, "reply_markup")

    channel = -1009876543210
    simulator.chats.declare(channel, chat_type=ChatType.CHANNEL)
    post = simulator.post_message(bot_id=BOT_ID, chat_id=channel, text="news")["message_id"]
    copy = await send_and_finish(
        stack,
        {
            "media_type": "copy",
            "source": {"from_chat_id": channel, "message_id": post},
            "user_ids": [62],
        },
    )
    code, _ = await rest(stack, "POST", f"/v1/broadcasts/{copy}/edit", {"message": "fresh"})
    assert code == 200
    outcome = [m.result for m in await watch(stack, copy) if m.result.edit]
    assert [EDITS[r.edit] for r in outcome] == ["edited"]
    assert last_message(simulator, 62)["text"] == "fresh"
