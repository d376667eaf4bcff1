"""Users and audiences through the whole service (``stack``, on each backend), over real
gRPC and HTTP: audience kinds, get/delete, bulk upserts and streamed or CSV imports.

The store's side is ``test_users_store``; the request rules and CSV parsing are
``test_users_validation``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import aiohttp
import grpc
import pytest

from tests.fixtures.grpc_details import bad_request
from tests.fixtures.rest import get, post
from tests.fixtures.stack import Stack
from tests.fixtures.watching import assert_watch_complete, watch
from tgbroadcast.simulator import ChatState
from tgbroadcast.v1 import broadcast_pb2 as pb


async def send(stack: Stack, request: pb.SendMessageRequest) -> pb.SendMessageResponse:
    async with stack.stub() as stub:
        response: pb.SendMessageResponse = await stub.SendMessage(request, metadata=stack.metadata)
        return response


async def test_each_audience_kind_reaches_its_users(stack: Stack) -> None:
    async with stack.stub() as stub:
        await stub.UpsertUsers(
            pb.UpsertUsersRequest(
                users=[
                    pb.User(id=1, language_code="en", tags=["vip"]),
                    pb.User(id=2, language_code="de", tags=["vip", "beta"]),
                    pb.User(id=3, language_code="en", tags=["beta"]),
                    pb.User(id=4, language_code="en"),
                ]
            ),
            metadata=stack.metadata,
        )
    # User 4 blocks the bot: the first broadcast to it makes it inactive, reason "blocked".
    stack.simulator.chats.declare(4, ChatState.BLOCKED)
    by_ids = await send(stack, pb.SendMessageRequest(message="ids", user_ids=[4, 5, 4]))
    assert by_ids.total == 2
    assert_watch_complete(await watch(stack, by_ids.broadcast_id), {4, 5})
    status, four = await get(stack, "/v1/users/4")
    assert status == 200
    assert (four["active"], four["blocked_reason"]) == (False, "blocked")
    assert four["blocked_at"].endswith("Z")

    everyone = await send(stack, pb.SendMessageRequest(message="all", all_users=True))
    assert everyone.total == 4  # 1, 2, 3 and the recorded recipient 5; not 4
    assert_watch_complete(await watch(stack, everyone.broadcast_id), {1, 2, 3, 5})

    vip_en = await send(
        stack,
        pb.SendMessageRequest(
            message="vip", filter=pb.UserFilter(tags=["VIP"], language_codes=["en"])
        ),
    )
    assert vip_en.total == 1
    assert_watch_complete(await watch(stack, vip_en.broadcast_id), {1})

    # An empty filter (a selection left empty) reaches nobody: every user is all_users.
    async with stack.stub() as stub:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.SendMessage(
                pb.SendMessageRequest(message="empty", filter=pb.UserFilter(tags=[])),
                metadata=stack.metadata,
            )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "set all_users to true" in bad_request(refused.value)["filter"]
    status, problem = await post(stack, "/v1/broadcasts", {"message": "x", "filter": {"tags": []}})
    assert (status, [e["field"] for e in problem["errors"]]) == (400, ["filter"])

    status, body = await post(
        stack, "/v1/broadcasts", {"message": "rest", "filter": {"tags": ["beta", "vip"]}}
    )
    assert (status, body["total"]) == (202, 3)
    assert_watch_complete(await watch(stack, body["broadcast_id"]), {1, 2, 3})

    status, problem = await post(
        stack, "/v1/broadcasts", {"message": "x", "all_users": True, "filter": {}}
    )
    assert status == 400
    assert problem["errors"][0]["field"] == "filter"
    async with stack.stub() as stub:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.SendMessage(
                pb.SendMessageRequest(message="x", user_ids=[1], filter=pb.UserFilter()),
                metadata=stack.metadata,
            )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not both user_ids and filter" in bad_request(raised.value)["filter"]

    # ListUsers with a filter, over both transports.
    status, listed = await get(stack, "/v1/users?tag=beta&language_code=en&active_only=true")
    assert [u["id"] for u in listed["users"]] == [3]
    assert listed["users"][0]["tags"] == ["beta"]
    async with stack.stub() as stub:
        page = await stub.ListUsers(
            pb.ListUsersRequest(filter=pb.UserFilter(language_codes=["en"])),
            metadata=stack.metadata,
        )
    assert [(u.id, u.active, u.blocked_reason) for u in page.users] == [
        (1, True, ""),
        (3, True, ""),
        (4, False, "blocked"),
    ]
    assert page.users[2].HasField("blocked_at")


async def count_users(stack: Stack, **query: str) -> int:
    """Users listed by GET /v1/users with the query, over every page."""
    count = 0
    token = ""
    while True:
        params = {**query, "page_size": "1000", "page_token": token}
        async with (
            aiohttp.ClientSession() as session,
            session.get(stack.http_url + "/v1/users", params=params, headers=stack.auth) as r,
        ):
            assert r.status == 200
            page = await r.json()
        count += len(page["users"])
        token = page["next_page_token"]
        if not token:
            return count


def users_chunk(ids: Iterable[int], *tags: str) -> pb.ImportUsersRequest:
    return pb.ImportUsersRequest(users=[pb.User(id=i, tags=list(tags)) for i in ids])


async def import_stream(
    stack: Stack, chunks: Sequence[pb.ImportUsersRequest]
) -> pb.ImportUsersResponse:
    async def requests() -> AsyncIterator[pb.ImportUsersRequest]:
        for chunk in chunks:
            yield chunk

    async with stack.stub() as stub:
        response: pb.ImportUsersResponse = await stub.ImportUsers(
            requests(), metadata=stack.metadata
        )
        return response


async def test_import_users_streams_chunks_and_stops_at_a_bad_one(stack: Stack) -> None:
    answer = await import_stream(
        stack,
        [
            users_chunk(range(1, 10_001), "first"),
            users_chunk(range(10_001, 20_001), "second"),
            users_chunk(range(20_001, 25_001), "third"),
        ],
    )
    assert answer.imported == 25_000
    assert await count_users(stack) == 25_000
    assert await count_users(stack, tag="third") == 5_000
    async with stack.stub() as stub:
        user = await stub.GetUser(pb.GetUserRequest(user_id=15_000), metadata=stack.metadata)
    assert list(user.user.tags) == ["second"]

    bad = users_chunk(range(30_001, 30_005))
    bad.users[3].id = 0
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await import_stream(
            stack, [users_chunk(range(30_000, 30_001), "ok"), bad, users_chunk([40_000])]
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "chunks[1].users[3].id" in bad_request(raised.value)
    assert "the 1 users before it were imported" in (raised.value.details() or "")
    assert (await get(stack, "/v1/users/30000"))[0] == 200
    assert (await get(stack, "/v1/users/30001"))[0] == 404
    assert (await get(stack, "/v1/users/40000"))[0] == 404

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await import_stream(stack, [users_chunk(range(50_000, 60_001))])
    assert "at most 10000" in bad_request(raised.value)["chunks[0].users"]
    assert (await get(stack, "/v1/users/50000"))[0] == 404


async def post_csv(stack: Stack, text: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            stack.http_url + "/v1/users/import",
            data=text.encode(),
            headers={**stack.auth, "Content-Type": "text/csv"},
        ) as response,
    ):
        return response.status, await response.json(content_type=None)


async def test_csv_import_over_rest(stack: Stack) -> None:
    text = "id,username,first_name,last_name,language_code,tags\n" + "".join(
        f"{i},user{i},First,Last,EN,imported t{i % 2}\n" for i in range(1, 10_003)
    )
    assert await post_csv(stack, text) == (200, {"imported": 10_002})
    status, user = await get(stack, "/v1/users/7")
    assert status == 200
    assert (user["username"], user["language_code"], user["tags"]) == (
        "user7",
        "en",
        ["imported", "t1"],
    )
    assert await count_users(stack, tag="t0", language_code="en") == 5_001

    # A bad line: the chunks before it stay, the one holding it and the rest are not written.
    rows = [f"{i},,,,," for i in range(100_001, 110_001)] + [
        "110001,,,,,",
        "oops,,,,,",
        "110003,,,,,",
    ]
    status, problem = await post_csv(
        stack, "id,username,first_name,last_name,language_code,tags\n" + "\n".join(rows)
    )
    assert status == 400
    assert problem["errors"] == [
        {"field": "line 10003.id", "message": "'oops' is not a whole number"}
    ]
    assert problem["imported"] == 10_000
    assert (await get(stack, "/v1/users/110000"))[0] == 200
    assert (await get(stack, "/v1/users/110001"))[0] == 404

    status, problem = await post_csv(stack, 'id,tags\n5,has\ttab ok\n6,"bad,tag"\n')
    assert status == 400
    assert problem["errors"][0]["field"] == "line 3.tags[0]"

    async with (
        aiohttp.ClientSession() as session,
        session.post(
            stack.http_url + "/v1/users/import", json={"id": 1}, headers=stack.auth
        ) as response,
    ):
        assert response.status == 415


async def test_get_and_delete_user(stack: Stack) -> None:
    status, _ = await post(stack, "/v1/users", {"users": [{"id": 9, "tags": ["vip"]}]})
    assert status == 200
    assert (await get(stack, "/v1/users/9"))[1]["tags"] == ["vip"]
    async with aiohttp.ClientSession(headers=stack.auth) as session:
        async with session.delete(stack.http_url + "/v1/users/9") as response:
            assert response.status == 204
        async with session.delete(stack.http_url + "/v1/users/9") as response:
            assert response.status == 404
            assert (await response.json(content_type=None))["detail"] == "user 9 not found"
    status, problem = await get(stack, "/v1/users/9")
    assert (status, problem["status"]) == (404, 404)
    assert (await get(stack, "/v1/users/abc"))[0] == 400
    async with stack.stub() as stub:
        for call in (
            stub.GetUser(pb.GetUserRequest(user_id=9), metadata=stack.metadata),
            stub.DeleteUser(pb.DeleteUserRequest(user_id=9), metadata=stack.metadata),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call
            assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        await stub.UpsertUsers(
            pb.UpsertUsersRequest(users=[pb.User(id=-100, tags=["group"])]), metadata=stack.metadata
        )
        assert (
            await stub.DeleteUser(pb.DeleteUserRequest(user_id=-100), metadata=stack.metadata)
            == pb.DeleteUserResponse()
        )
        # Without the API token, streaming or not, nothing is done.
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.ImportUsers(iter([users_chunk([1])]))
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (await get(stack, "/v1/users/1"))[0] == 404


async def test_more_than_ten_thousand_users_write_nothing(stack: Stack) -> None:
    users = [{"id": i, "tags": ["x"]} for i in range(1, 10_002)]
    status, problem = await post(stack, "/v1/users", {"users": users})
    assert status == 400
    assert problem["errors"] == [
        {"field": "users", "message": "has 10001 users; at most 10000 per call"}
    ]
    async with stack.stub() as stub:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.UpsertUsers(
                pb.UpsertUsersRequest(users=[pb.User(id=i) for i in range(1, 10_002)]),
                metadata=stack.metadata,
            )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "users" in bad_request(raised.value)
    status, listed = await get(stack, "/v1/users")
    assert listed["users"] == []
