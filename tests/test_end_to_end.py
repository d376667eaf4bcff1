"""End to end over real sockets: REST and gRPC → SQL → NATS → worker → simulated Telegram."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.fixtures.held_calls import HoldingSimulator
from tests.fixtures.nats import wait_until
from tests.fixtures.rest import get, post
from tests.fixtures.stack import SECOND_API_TOKEN, Backend, Stack, start_stack
from tests.fixtures.telegram import sends_by_chat
from tests.fixtures.watching import assert_watch_complete, watch, watch_into
from tgbroadcast.simulator import ChatState, Simulator
from tgbroadcast.v1 import broadcast_pb2 as pb

MEDIA_METHODS = {
    "photo": ("sendPhoto", "photo"),
    "video": ("sendVideo", "video"),
    "animation": ("sendAnimation", "animation"),
    "document": ("sendDocument", "document"),
    "audio": ("sendAudio", "audio"),
    "voice": ("sendVoice", "voice"),
    "video_note": ("sendVideoNote", "video_note"),
    "sticker": ("sendSticker", "sticker"),
}


async def test_rest_text_broadcast_reaches_every_recipient_once(stack: Stack) -> None:
    status, body = await post(
        stack, "/send-message", {"message": "Hello, world!", "user_ids": [11, 12, 13, 12]}
    )
    assert status == 202
    assert body == {"broadcast_id": body["broadcast_id"], "status": "queued", "total": 3}

    results = assert_watch_complete(await watch(stack, body["broadcast_id"]), {11, 12, 13})
    assert all(r.outcome == pb.DELIVERY_OUTCOME_SENT and r.message_id > 0 for r in results.values())
    assert sends_by_chat(stack.simulator, "sendMessage") == {11: 1, 12: 1, 13: 1}
    texts = {call.params["text"] for call in stack.simulator.calls if call.method == "sendMessage"}
    assert texts == {"Hello, world!"}

    status, broadcast = await get(stack, f"/v1/broadcasts/{body['broadcast_id']}")
    assert status == 200
    assert broadcast["status"] == "completed"
    assert (broadcast["total"], broadcast["sent"], broadcast["failed"], broadcast["pending"]) == (
        3,
        3,
        0,
        0,
    )
    assert broadcast["finished_at"] is not None


@pytest.mark.parametrize("media_type", list(MEDIA_METHODS))
async def test_grpc_media_broadcast_uses_the_right_method(stack: Stack, media_type: str) -> None:
    method, parameter = MEDIA_METHODS[media_type]
    takes_caption = media_type not in ("video_note", "sticker")
    # Telegram fetches documents by URL only as GIF/PDF/ZIP, stickers only as .webp, and never
    # video notes: those are uploaded.
    extension = {"document": "pdf", "sticker": "webp"}.get(media_type, "bin")
    upload = media_type == "video_note"
    url = "" if upload else f"https://cdn.example.com/{media_type}.{extension}"
    async with stack.stub() as stub:
        response = await stub.SendMessage(
            pb.SendMessageRequest(
                message="A caption" if takes_caption else "",
                media_type=pb.MediaType.Value("MEDIA_TYPE_" + media_type.upper()),
                media_url=url,
                media_data=b"\x00note" if upload else b"",
                user_ids=[21, 22],
            ),
            metadata=stack.metadata,
        )
    assert response.status == pb.BROADCAST_STATUS_QUEUED
    assert response.total == 2
    assert_watch_complete(await watch(stack, response.broadcast_id), {21, 22})
    assert sends_by_chat(stack.simulator, method) == {21: 1, 22: 1}
    for call in stack.simulator.calls:
        assert call.ok, call
        assert call.params[parameter] in (url,) or call.media in ("file_id", "upload")
        if takes_caption:
            assert call.params["caption"] == "A caption"
        else:
            assert "caption" not in call.params


async def test_late_watcher_replays_then_follows_live(backend: Backend) -> None:
    # Three sends answered, the fourth held: the watchers join while the broadcast runs.
    async with (
        HoldingSimulator() as simulator,
        start_stack(backend, simulator, {"TGB_WORKER_CONCURRENCY": "1"}) as stack,
    ):
        held = simulator.hold("sendMessage", after=3)
        try:
            recipients = set(range(100, 110))
            status, body = await post(
                stack, "/send-message", {"message": "tick", "user_ids": sorted(recipients)}
            )
            assert status == 202
            broadcast_id = body["broadcast_id"]
            await held.holding()

            async def three_sent() -> bool:
                _, state = await get(stack, f"/v1/broadcasts/{broadcast_id}")
                return bool(state["sent"] >= 3)

            await wait_until(three_sent)
            _, state = await get(stack, f"/v1/broadcasts/{broadcast_id}")
            assert state["status"] == "running"
            late: list[pb.WatchBroadcastResponse] = []
            replay: list[pb.WatchBroadcastResponse] = []
            watching = asyncio.gather(
                watch_into(late, stack, broadcast_id), watch_into(replay, stack, broadcast_id)
            )

            async def joined() -> bool:  # each has replayed the three outcomes so far
                return len(late) >= 3 and len(replay) >= 3

            await wait_until(joined)
            held.release()
            await watching
        finally:
            held.release()
        assert_watch_complete(late, recipients)
        assert_watch_complete(replay, recipients)
        # Finished: a new watcher replays everything from SQL and ends.
        assert_watch_complete(await watch(stack, broadcast_id), recipients)


async def test_all_users_reaches_every_active_user(stack: Stack) -> None:
    users = [
        {"id": 501, "first_name": "Ann", "username": "ann", "language_code": "en"},
        {"id": 502, "first_name": "Бob"},
        {"id": 503, "first_name": "Cé 🎉"},
    ]
    status, body = await post(stack, "/v1/users", {"users": users})
    assert (status, body) == (200, {"upserted": 3})
    status, listed = await get(stack, "/v1/users")
    assert status == 200
    assert [u["id"] for u in listed["users"]] == [501, 502, 503]
    assert listed["users"][2]["first_name"] == "Cé 🎉"
    assert all(u["active"] for u in listed["users"])

    status, body = await post(stack, "/send-message", {"message": "to all", "all_users": True})
    assert (status, body["total"]) == (202, 3)
    assert_watch_complete(await watch(stack, body["broadcast_id"]), {501, 502, 503})
    assert sends_by_chat(stack.simulator, "sendMessage") == {501: 1, 502: 1, 503: 1}


async def test_unknown_recipients_are_recorded_as_users(stack: Stack) -> None:
    status, body = await post(stack, "/send-message", {"message": "hi", "user_ids": [7001, -7002]})
    assert status == 202
    assert_watch_complete(await watch(stack, body["broadcast_id"]), {7001, -7002})
    async with stack.stub() as stub:
        page = await stub.ListUsers(pb.ListUsersRequest(), metadata=stack.metadata)
    assert {u.id for u in page.users} == {7001, -7002}


async def test_users_page_through_grpc(stack: Stack) -> None:
    async with stack.stub() as stub:
        upserted = await stub.UpsertUsers(
            pb.UpsertUsersRequest(users=[pb.User(id=i, first_name=f"u{i}") for i in range(1, 6)]),
            metadata=stack.metadata,
        )
        assert upserted.upserted == 5
        first = await stub.ListUsers(pb.ListUsersRequest(page_size=2), metadata=stack.metadata)
        second = await stub.ListUsers(
            pb.ListUsersRequest(page_size=2, page_token=first.next_page_token),
            metadata=stack.metadata,
        )
        third = await stub.ListUsers(
            pb.ListUsersRequest(page_size=2, page_token=second.next_page_token),
            metadata=stack.metadata,
        )
    assert [u.id for u in first.users] == [1, 2]
    assert [u.id for u in second.users] == [3, 4]
    assert [u.id for u in third.users] == [5]
    assert third.next_page_token == ""
    assert first.users[0].first_name == "u1"
    assert first.users[0].created_at.seconds > 0


async def test_failed_recipients_carry_telegrams_description(stack: Stack) -> None:
    stack.simulator.chats.declare(31, ChatState.BLOCKED)
    status, body = await post(stack, "/send-message", {"message": "hi", "user_ids": [30, 31]})
    assert status == 202
    results = assert_watch_complete(await watch(stack, body["broadcast_id"]), {30, 31})
    assert results[30].outcome == pb.DELIVERY_OUTCOME_SENT
    assert results[31].outcome == pb.DELIVERY_OUTCOME_BLOCKED
    assert results[31].error == "Forbidden: bot was blocked by the user"
    _, broadcast = await get(stack, f"/v1/broadcasts/{body['broadcast_id']}")
    assert (broadcast["sent"], broadcast["failed"], broadcast["status"]) == (1, 1, "completed")
    assert broadcast["outcome_counts"] == {"sent": 1, "blocked": 1}


async def test_restart_keeps_users_and_history(backend: Backend, simulator: Simulator) -> None:
    async with start_stack(backend, simulator) as stack:
        await post(stack, "/v1/users", {"users": [{"id": 900, "first_name": "Kept"}]})
        status, first = await post(stack, "/send-message", {"message": "one", "all_users": True})
        assert status == 202
        assert_watch_complete(await watch(stack, first["broadcast_id"]), {900})
    async with start_stack(backend, simulator) as stack:
        status, old = await get(stack, f"/v1/broadcasts/{first['broadcast_id']}")
        assert status == 200
        assert (old["status"], old["sent"], old["message"]) == ("completed", 1, "one")
        _, listed = await get(stack, "/v1/users")
        assert [(u["id"], u["first_name"]) for u in listed["users"]] == [(900, "Kept")]
        status, second = await post(stack, "/send-message", {"message": "two", "all_users": True})
        assert status == 202
        assert second["broadcast_id"] != first["broadcast_id"]
        assert_watch_complete(await watch(stack, second["broadcast_id"]), {900})
        assert_watch_complete(await watch(stack, first["broadcast_id"]), {900})
    assert sends_by_chat(simulator, "sendMessage") == {900: 2}


async def test_any_configured_token_works_and_others_do_not(stack: Stack) -> None:
    body = {"message": "hi", "user_ids": [1]}
    status, _ = await post(
        stack, "/send-message", body, headers={"Authorization": f"Bearer {SECOND_API_TOKEN}"}
    )
    assert status == 202
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": "x"}):
        status, problem = await post(stack, "/send-message", body, headers=headers)
        assert status == 401
        assert problem["status"] == 401
        assert "API token" in problem["detail"]
    async with stack.stub() as stub:
        for metadata in ((), (("authorization", "Bearer nope-nope-nope-nope"),)):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.GetBroadcast(pb.GetBroadcastRequest(broadcast_id=1), metadata=metadata)
            assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
            call = stub.WatchBroadcast(pb.WatchBroadcastRequest(broadcast_id=1), metadata=metadata)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                [m async for m in call]
            assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_grpc_errors_are_precise(stack: Stack) -> None:
    async with stack.stub() as stub:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.SendMessage(
                pb.SendMessageRequest(
                    media_type=pb.MEDIA_TYPE_PHOTO, message="x" * 1025, user_ids=[1, 0]
                ),
                metadata=stack.metadata,
            )
        error = raised.value
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
        assert status is not None
        bad_request = error_details_pb2.BadRequest()
        assert status.details[0].Unpack(bad_request)
        fields = {v.field: v.description for v in bad_request.field_violations}
        assert set(fields) == {"media_url", "message", "user_ids[1]"}
        assert "1025" in fields["message"]

        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.GetBroadcast(
                pb.GetBroadcastRequest(broadcast_id=424242), metadata=stack.metadata
            )
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        assert raised.value.details() == "broadcast 424242 not found"

        call = stub.WatchBroadcast(
            pb.WatchBroadcastRequest(broadcast_id=424242), metadata=stack.metadata
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            [m async for m in call]
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND

        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.SendMessage(
                pb.SendMessageRequest(message="hi", media_type=99, user_ids=[1]),  # type: ignore[arg-type]
                metadata=stack.metadata,
            )
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "media_type" in (raised.value.details() or "")
    assert stack.simulator.calls == ()
