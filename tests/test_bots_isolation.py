"""Every request has a bot (#13, items 4 and 5), over REST and gRPC on a running stack with two
configured bots: ``default`` (``telegram.token``) and ``shop`` (``bots:``).

Each bot has its own users, tags, idempotency keys and broadcasts; a request that names no
bot acts for the token's only bot, else ``default``; naming a bot the token may not use is
403 / PERMISSION_DENIED, one the service does not know 400 / INVALID_ARGUMENT on ``bot``; a
broadcast of a bot the token may not use is answered exactly as one that does not exist, and
lists show only the bots the token may use.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import aiohttp
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.fixtures.stack import API_TOKEN, Backend, Stack, on_sqlite, start_stack
from tests.fixtures.telegram import BOT_ID, OTHER_BOT_TOKEN
from tests.fixtures.watching import assert_watch_complete, watch
from tgbroadcast.core.domain.access import SCOPES
from tgbroadcast.simulator import Fault, Simulator
from tgbroadcast.v1 import broadcast_pb2 as pb
from tgbroadcast.v1 import broadcast_pb2_grpc as pb_grpc

SHOP = "shop"
SHOP_ID = int(OTHER_BOT_TOKEN.split(":", 1)[0])
TOKENS = {"shop-only": [SHOP], "default-only": ["default"], "both": ["default", SHOP]}
"""API tokens with every scope on these bots (``API_TOKEN`` may use every bot)."""
USER = 500
Stub: TypeAlias = "pb_grpc.BroadcastServiceAsyncStub"
Call: TypeAlias = "Callable[[Stub, tuple[tuple[str, str], ...]], Awaitable[Any]]"


def secret(name: str) -> str:
    return f"{name}-bots-token-0123456789"


@pytest.fixture
async def bots(backend: Backend, simulator: Simulator) -> AsyncIterator[Stack]:
    overrides = {
        "TGB_BOTS": json.dumps([{"name": SHOP, "token": OTHER_BOT_TOKEN}]),
        "TGB_SERVER_API_TOKENS": json.dumps(
            [
                {"name": name, "token": secret(name), "bots": names, "scopes": [*SCOPES]}
                for name, names in TOKENS.items()
            ]
        ),
    }
    async with start_stack(backend, simulator, overrides) as stack:
        yield stack


async def rest(
    stack: Stack,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str = API_TOKEN,
    csv: str | None = None,
) -> tuple[int, str, Any]:
    """The status, content type and JSON answer (None for another type)."""
    headers = {"Authorization": f"Bearer {token}"}
    kwargs: dict[str, Any] = {} if body is None else {"json": body}
    if csv is not None:
        kwargs = {"data": csv.encode()}
        headers["Content-Type"] = "text/csv"
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, stack.http_url + path, headers=headers, **kwargs) as answer,
    ):
        data = await answer.json(content_type=None) if "json" in answer.content_type else None
        return answer.status, answer.content_type, data


def metadata(token: str = API_TOKEN) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def send(stack: Stack, body: dict[str, Any], *, token: str = API_TOKEN) -> dict[str, Any]:
    status, _, answer = await rest(stack, "POST", "/v1/broadcasts", body, token=token)
    assert status == 202, answer
    return dict(answer)


async def broadcast_of(stack: Stack, broadcast_id: int) -> dict[str, Any]:
    status, _, answer = await rest(stack, "GET", f"/v1/broadcasts/{broadcast_id}")
    assert status == 200, answer
    return dict(answer)


async def user_of(stack: Stack, bot: str, user_id: int = USER) -> dict[str, Any]:
    status, _, answer = await rest(stack, "GET", f"/v1/users/{user_id}?bot={bot}")
    assert status == 200, answer
    return dict(answer)


def field_violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    found = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            found += [(v.field, v.description) for v in bad.field_violations]
    return found


async def test_the_same_user_id_under_two_bots_is_two_users(bots: Stack) -> None:
    """Profiles and tags per bot; blocked for one bot, still active for the other; deleted
    under one, kept under the other."""
    status, _, answer = await rest(
        bots, "POST", "/v1/users", {"users": [{"id": USER, "first_name": "Ann", "tags": ["a"]}]}
    )
    assert (status, answer) == (200, {"upserted": 1})
    async with bots.stub() as stub:
        await stub.UpsertUsers(
            pb.UpsertUsersRequest(users=[pb.User(id=USER, first_name="Bo", tags=["b"])], bot=SHOP),
            metadata=metadata(),
        )
        shop_user = await stub.GetUser(
            pb.GetUserRequest(user_id=USER, bot=SHOP), metadata=metadata()
        )
    assert (shop_user.user.first_name, list(shop_user.user.tags)) == ("Bo", ["b"])
    ann = await user_of(bots, "default")
    assert (ann["first_name"], ann["tags"]) == ("Ann", ["a"])

    # Tags select among the bot's own users only.
    for bot, tag, total in (("default", "b", 0), (SHOP, "b", 1), (SHOP, "a", 0)):
        answer = await send(bots, {"message": "hi", "filter": {"tags": [tag]}, "bot": bot})
        assert answer["total"] == total, (bot, tag)
        assert_watch_complete(await watch(bots, answer["broadcast_id"]), {USER} if total else set())

    # Blocked by the user under shop: the fault answers the next send to the chat, shop's.
    bots.simulator.faults.inject(
        Fault.error(403, "Forbidden: bot was blocked by the user"),
        method="sendMessage",
        chat_id=USER,
    )
    blocked = await send(bots, {"message": "sale", "user_ids": [USER], "bot": SHOP})
    results = assert_watch_complete(await watch(bots, blocked["broadcast_id"]), {USER})
    assert results[USER].outcome == pb.DELIVERY_OUTCOME_BLOCKED
    assert (await user_of(bots, SHOP))["active"] is False
    assert (await user_of(bots, "default"))["active"] is True
    sent = await send(bots, {"message": "news", "user_ids": [USER]})
    results = assert_watch_complete(await watch(bots, sent["broadcast_id"]), {USER})
    assert results[USER].outcome == pb.DELIVERY_OUTCOME_SENT
    senders = {
        c.params["text"]: c.bot_id for c in bots.simulator.calls if c.method == "sendMessage"
    }
    assert senders == {"hi": SHOP_ID, "sale": SHOP_ID, "news": BOT_ID}

    # Deleted under shop only.
    status, _, _ = await rest(bots, "DELETE", f"/v1/users/{USER}?bot={SHOP}")
    assert status == 204
    status, _, answer = await rest(bots, "GET", f"/v1/users/{USER}?bot={SHOP}")
    assert (status, answer["detail"]) == (404, f"user {USER} of bot 'shop' not found")
    assert (await user_of(bots, "default"))["first_name"] == "Ann"


@on_sqlite
async def test_imports_and_lists_are_per_bot(bots: Stack) -> None:
    status, _, answer = await rest(
        bots, "POST", f"/v1/users/import?bot={SHOP}", csv="id,tags\n601,x\n602,x\n"
    )
    assert (status, answer) == (200, {"imported": 2})

    async def chunks(*messages: pb.ImportUsersRequest) -> AsyncIterator[pb.ImportUsersRequest]:
        for message in messages:
            yield message

    async with bots.stub() as stub:
        imported = await stub.ImportUsers(
            chunks(
                pb.ImportUsersRequest(users=[pb.User(id=603)], bot=SHOP),
                pb.ImportUsersRequest(users=[pb.User(id=604)]),
            ),
            metadata=metadata(),
        )
        assert imported.imported == 2
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.ImportUsers(
                chunks(
                    pb.ImportUsersRequest(users=[pb.User(id=605)], bot=SHOP),
                    pb.ImportUsersRequest(users=[pb.User(id=606)], bot="default"),
                ),
                metadata=metadata(),
            )
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [f for f, _ in field_violations(raised.value)] == ["chunks[1].bot"]
        listed = await stub.ListUsers(pb.ListUsersRequest(bot=SHOP), metadata=metadata())
        assert [u.id for u in listed.users] == [601, 602, 603, 604, 605]
        listed = await stub.ListUsers(pb.ListUsersRequest(), metadata=metadata())
        assert list(listed.users) == []
    status, _, answer = await rest(bots, "GET", f"/v1/users?bot={SHOP}&tag=x")
    assert [u["id"] for u in answer["users"]] == [601, 602]
    status, _, answer = await rest(bots, "GET", "/v1/users", token=secret("shop-only"))
    assert len(answer["users"]) == 5  # the token's only bot


@on_sqlite
async def test_idempotency_keys_are_per_bot(bots: Stack) -> None:
    body = {"message": "once", "user_ids": [USER], "idempotency_key": "k-1"}
    first = await send(bots, body)
    other = await send(bots, {**body, "bot": SHOP})
    assert other["broadcast_id"] != first["broadcast_id"]
    assert "replayed" not in other
    again = await send(bots, {**body, "bot": SHOP})
    assert again == {**other, "replayed": True}
    async with bots.stub() as stub:
        replayed = await stub.SendMessage(
            pb.SendMessageRequest(message="once", user_ids=[USER], idempotency_key="k-1"),
            metadata=metadata(),
        )
    assert (replayed.broadcast_id, replayed.replayed) == (first["broadcast_id"], True)


@on_sqlite
async def test_an_omitted_bot_is_the_tokens_only_bot_else_default(bots: Stack) -> None:
    expected = {"shop-only": SHOP, "default-only": "default", "both": "default", "": "default"}
    for name, bot in expected.items():
        token = secret(name) if name else API_TOKEN
        answer = await send(bots, {"message": "x", "user_ids": [USER]}, token=token)
        assert (await broadcast_of(bots, answer["broadcast_id"]))["bot"] == bot, name
        async with bots.stub() as stub:
            sent = await stub.SendMessage(
                pb.SendMessageRequest(message="x", user_ids=[USER]), metadata=metadata(token)
            )
            got = await stub.GetBroadcast(
                pb.GetBroadcastRequest(broadcast_id=sent.broadcast_id), metadata=metadata()
            )
        assert got.broadcast.bot == bot, name


@on_sqlite
async def test_a_bot_the_token_may_not_use_is_refused(bots: Stack) -> None:
    token = secret("default-only")
    detail = "API token default-only may not use bot 'shop'"
    requests: list[tuple[str, str, Any, str | None]] = [
        ("POST", "/v1/broadcasts", {"message": "x", "user_ids": [USER], "bot": SHOP}, None),
        ("POST", "/send-message", {"message": "x", "user_ids": [USER], "bot": SHOP}, None),
        ("POST", "/v1/preview", {"message": {"message": "x", "bot": SHOP}, "user_id": USER}, None),
        ("POST", "/v1/users", {"users": [{"id": USER}], "bot": SHOP}, None),
        ("POST", f"/v1/users/import?bot={SHOP}", None, "id\n1\n"),
        ("GET", f"/v1/users?bot={SHOP}", None, None),
        ("GET", f"/v1/users/{USER}?bot={SHOP}", None, None),
        ("DELETE", f"/v1/users/{USER}?bot={SHOP}", None, None),
        ("GET", f"/v1/broadcasts?bot={SHOP}", None, None),
    ]
    for method, path, body, csv in requests:
        status, _, answer = await rest(bots, method, path, body, token=token, csv=csv)
        assert (status, answer["detail"]) == (403, detail), path
    # Without a bot, "shop-only" acts for shop: "default" is named by nobody, and refused.
    status, _, answer = await rest(bots, "GET", "/v1/users?bot=default", token=secret("shop-only"))
    assert (status, answer["detail"]) == (403, "API token shop-only may not use bot 'default'")

    calls: dict[str, Call] = {
        "SendMessage": lambda s, m: s.SendMessage(
            pb.SendMessageRequest(message="x", user_ids=[USER], bot=SHOP), metadata=m
        ),
        "PreviewMessage": lambda s, m: s.PreviewMessage(
            pb.PreviewMessageRequest(
                message=pb.SendMessageRequest(message="x", bot=SHOP), user_id=USER
            ),
            metadata=m,
        ),
        "UpsertUsers": lambda s, m: s.UpsertUsers(
            pb.UpsertUsersRequest(users=[pb.User(id=USER)], bot=SHOP), metadata=m
        ),
        "ListUsers": lambda s, m: s.ListUsers(pb.ListUsersRequest(bot=SHOP), metadata=m),
        "GetUser": lambda s, m: s.GetUser(pb.GetUserRequest(user_id=USER, bot=SHOP), metadata=m),
        "DeleteUser": lambda s, m: s.DeleteUser(
            pb.DeleteUserRequest(user_id=USER, bot=SHOP), metadata=m
        ),
        "ListBroadcasts": lambda s, m: s.ListBroadcasts(
            pb.ListBroadcastsRequest(bot=SHOP), metadata=m
        ),
    }
    async with bots.stub() as stub:
        for name, call in calls.items():
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call(stub, metadata(token))
            assert (raised.value.code(), raised.value.details()) == (
                grpc.StatusCode.PERMISSION_DENIED,
                detail,
            ), name


@on_sqlite
async def test_an_unknown_bot_is_a_bad_request_naming_the_field(bots: Stack) -> None:
    for bot, message in (("nosuch", "no bot named 'nosuch'"), ("No Such!", None)):
        for path, body in (
            ("/v1/broadcasts", {"message": "x", "user_ids": [USER], "bot": bot}),
            ("/v1/users", {"users": [{"id": USER}], "bot": bot}),
        ):
            status, kind, answer = await rest(bots, "POST", path, body)
            assert (status, kind) == (400, "application/problem+json"), path
            assert [e["field"] for e in answer["errors"]] == ["bot"], path
            if message is not None:
                assert answer["errors"][0]["message"] == message
    async with bots.stub() as stub:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.SendMessage(
                pb.SendMessageRequest(message="x", user_ids=[USER], bot="nosuch"),
                metadata=metadata(),
            )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(raised.value) == [("bot", "no bot named 'nosuch'")]
    status, _, answer = await rest(bots, "GET", "/v1/broadcasts?bot=No%20Such!")
    assert (status, [e["field"] for e in answer["errors"]]) == (400, ["bot"])


@on_sqlite
async def test_a_hidden_broadcast_is_answered_as_a_missing_one(bots: Stack) -> None:
    """Status, content type, body and gRPC trailers alike, for every route and RPC that
    finds a broadcast by id: shop's broadcast asked by "default-only", and an id that does
    not exist asked by a token that sees every bot."""
    hidden = (await send(bots, {"message": "x", "user_ids": [USER], "bot": SHOP}))["broadcast_id"]
    missing = hidden + 1000
    token = secret("default-only")
    for method, path in (
        ("GET", "/v1/broadcasts/{}"),
        ("GET", "/v1/broadcasts/{}/deliveries"),
        ("GET", "/v1/broadcasts/{}/deliveries.csv"),
        ("GET", "/v1/broadcasts/{}/events"),
        ("POST", "/v1/broadcasts/{}/pause"),
        ("POST", "/v1/broadcasts/{}/resume"),
        ("POST", "/v1/broadcasts/{}/cancel"),
    ):
        absent = await rest(bots, method, path.format(missing))
        assert absent[0] == 404, path
        seen = await rest(bots, method, path.format(hidden), token=token)
        assert seen[:2] == absent[:2], path
        assert seen[2] == {**absent[2], "detail": f"broadcast {hidden} not found"}, path

    async def call(name: str, broadcast_id: int, token: str) -> None:
        async with bots.stub() as stub:
            if name == "WatchBroadcast":
                request = pb.WatchBroadcastRequest(broadcast_id=broadcast_id)
                async for _ in stub.WatchBroadcast(request, metadata=metadata(token)):
                    pass
            else:
                request = getattr(pb, f"{name}Request")(broadcast_id=broadcast_id)
                await getattr(stub, name)(request, metadata=metadata(token))

    async def failed(name: str, broadcast_id: int, token: str) -> tuple[Any, ...]:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(name, broadcast_id, token)
        error = raised.value
        trailers = [key for key, _ in error.trailing_metadata() or ()]
        return error.code(), error.details(), trailers

    for name in (
        "GetBroadcast",
        "ListDeliveries",
        "WatchBroadcast",
        "PauseBroadcast",
        "ResumeBroadcast",
        "CancelBroadcast",
    ):
        code, _, trailers = await failed(name, missing, API_TOKEN)
        assert code == grpc.StatusCode.NOT_FOUND, name
        assert await failed(name, hidden, token) == (
            code,
            f"broadcast {hidden} not found",
            trailers,
        ), name
    # The broadcast exists, untouched: seen by a token that may use shop.
    status, _, answer = await rest(
        bots, "GET", f"/v1/broadcasts/{hidden}", token=secret("shop-only")
    )
    assert (status, answer["bot"], answer["actions"]) == (200, SHOP, [])


@on_sqlite
async def test_lists_show_only_the_bots_the_token_may_use(bots: Stack) -> None:
    mine = (await send(bots, {"message": "x", "user_ids": [USER]}))["broadcast_id"]
    theirs = (await send(bots, {"message": "x", "user_ids": [USER], "bot": SHOP}))["broadcast_id"]

    async def listed(query: str = "", token: str = API_TOKEN) -> list[tuple[int, str]]:
        status, _, answer = await rest(bots, "GET", "/v1/broadcasts" + query, token=token)
        assert status == 200, answer
        return [(b["broadcast_id"], b["bot"]) for b in answer["broadcasts"]]

    assert await listed() == [(theirs, SHOP), (mine, "default")]
    assert await listed(token=secret("both")) == [(theirs, SHOP), (mine, "default")]
    assert await listed(token=secret("default-only")) == [(mine, "default")]
    assert await listed(token=secret("shop-only")) == [(theirs, SHOP)]
    assert await listed(f"?bot={SHOP}") == [(theirs, SHOP)]
    assert await listed("?bot=default", token=secret("both")) == [(mine, "default")]
    assert await listed("?bot=gone") == []  # a deleted bot's name is a valid filter
    async with bots.stub() as stub:
        page = await stub.ListBroadcasts(
            pb.ListBroadcastsRequest(), metadata=metadata(secret("shop-only"))
        )
        assert [(b.broadcast_id, b.bot) for b in page.broadcasts] == [(theirs, SHOP)]
        page = await stub.ListBroadcasts(
            pb.ListBroadcastsRequest(bot="default"), metadata=metadata()
        )
        assert [(b.broadcast_id, b.bot) for b in page.broadcasts] == [(mine, "default")]
    # A token that cannot see default's broadcasts has its query checked like any other.
    status, _, answer = await rest(
        bots, "GET", "/v1/broadcasts?status=bogus", token=secret("shop-only")
    )
    assert (status, [e["field"] for e in answer["errors"]]) == (400, ["status[0]"])
