"""Users and audiences: tags, filters, blocked reasons, get/delete, bulk upsert and imports.

The store tests run on SQLite, PostgreSQL and MariaDB (``database_url``); the API tests run
the whole service (``stack``) on each backend, over real gRPC and HTTP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import select

from tests.fixtures.stack import Stack
from tests.test_service import assert_watch_complete, get, post, watch
from tgbroadcast.core.domain.errors import InvalidArgument, NotFound
from tgbroadcast.core.domain.model import (
    Content,
    DeliveryResult,
    DeliveryState,
    NewBroadcast,
    UserFilter,
    UserProfile,
)
from tgbroadcast.core.rules.validation import SendRequest, validate_send, validate_users
from tgbroadcast.core.store import Store, create_engine
from tgbroadcast.core.store.tables import broadcasts
from tgbroadcast.server.rest.users_csv import csv_chunks
from tgbroadcast.simulator import ChatState
from tgbroadcast.v1 import broadcast_pb2 as pb

HELLO = Content(message="hello")
AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    async with Store.open(database_url) as opened:
        await opened.migrate()
        yield opened


def profile(user_id: int, *tags: str, language_code: str | None = None) -> UserProfile:
    return UserProfile(id=user_id, tags=tags, language_code=language_code)


async def recipients(store: Store, broadcast_id: int) -> set[int]:
    found: set[int] = set()
    async for batch in store.pending_batches(broadcast_id, batch_size=1000):
        found.update(batch)
    return found


def outcome(broadcast_id: int, user_id: int, state: DeliveryState) -> DeliveryResult:
    return DeliveryResult(
        broadcast_id=broadcast_id,
        user_id=user_id,
        state=state,
        finished_at=AT,
        message_id=1 if state is DeliveryState.SENT else None,
        error=None if state is DeliveryState.SENT else "Forbidden",
    )


# -- store, on every backend ------------------------------------------------------------------


async def test_an_upsert_replaces_the_given_users_tags(store: Store) -> None:
    await store.upsert_users([profile(1, "a", "b"), profile(2, "c")])
    assert (await store.get_user(1)).tags == ("a", "b")

    await store.upsert_users([profile(1, "d", "b")])
    assert (await store.get_user(1)).tags == ("b", "d")
    assert (await store.get_user(2)).tags == ("c",)

    # No tags given (None) keeps them; an empty tuple removes them all.
    await store.upsert_users([UserProfile(id=1, first_name="Ann")])
    assert (await store.get_user(1)).tags == ("b", "d")
    await store.upsert_users([profile(1)])
    one = await store.get_user(1)
    assert (one.tags, one.first_name) == ((), "Ann")
    page = await store.list_users(after=None, limit=10)
    assert [(u.id, u.tags) for u in page.users] == [(1, ()), (2, ("c",))]


async def test_a_filter_resolves_to_active_matching_users_in_sql(
    store: Store, database_url: str
) -> None:
    await store.upsert_users(
        [
            profile(1, "vip", "beta", language_code="en"),  # two matching tags: counted once
            profile(2, "vip", language_code="de"),
            profile(3, "beta", language_code="en"),
            profile(4, language_code="en"),
            profile(5, "vip", language_code="en"),  # made inactive below
            profile(6, "other"),
        ]
    )
    await store.deactivate_users([5], reason=DeliveryState.BLOCKED)

    async def resolved(user_filter: UserFilter) -> tuple[int, set[int]]:
        created = await store.create_broadcast(NewBroadcast(content=HELLO, filter=user_filter))
        assert created.total == len(await recipients(store, created.id))
        return created.total, await recipients(store, created.id)

    assert await resolved(UserFilter(tags=("vip", "beta"))) == (3, {1, 2, 3})
    assert await resolved(UserFilter(language_codes=("en",))) == (3, {1, 3, 4})
    assert await resolved(UserFilter(tags=("vip",), language_codes=("en", "fr"))) == (1, {1})
    assert await resolved(UserFilter()) == (5, {1, 2, 3, 4, 6})

    nobody = await store.create_broadcast(
        NewBroadcast(content=HELLO, filter=UserFilter(tags=("nobody",)))
    )
    assert (nobody.total, nobody.status.value) == (0, "completed")

    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            stored = await connection.scalar(
                select(broadcasts.c.audience).where(broadcasts.c.id == nobody.id)
            )
    finally:
        await engine.dispose()
    assert stored == '{"tags":["nobody"],"language_codes":[]}'


async def test_list_users_filters_and_pages(store: Store) -> None:
    await store.upsert_users(
        [profile(i, "even" if i % 2 == 0 else "odd", language_code="en") for i in range(1, 11)]
    )
    await store.deactivate_users([4])
    evens = UserFilter(tags=("even",))
    first = await store.list_users(after=None, limit=3, user_filter=evens)
    assert [u.id for u in first.users] == [2, 4, 6]
    rest = await store.list_users(after=first.next_after, limit=3, user_filter=evens)
    assert ([u.id for u in rest.users], rest.next_after) == ([8, 10], None)
    active = await store.list_users(after=None, limit=10, user_filter=evens, active_only=True)
    assert [u.id for u in active.users] == [2, 6, 8, 10]
    german = await store.list_users(
        after=None, limit=10, user_filter=UserFilter(language_codes=("de",))
    )
    assert german.users == ()


async def test_delete_user_forgets_it_and_its_tags_but_keeps_deliveries(store: Store) -> None:
    await store.upsert_users([profile(1, "vip"), profile(2, "vip")])
    sent_to = await store.create_broadcast(NewBroadcast(content=HELLO, user_ids=(1, 2)))
    await store.delete_user(1)
    with pytest.raises(NotFound, match="user 1 not found"):
        await store.get_user(1)
    with pytest.raises(NotFound):
        await store.delete_user(1)
    assert await recipients(store, sent_to.id) == {1, 2}
    later = await store.create_broadcast(
        NewBroadcast(content=HELLO, filter=UserFilter(tags=("vip",)))
    )
    assert await recipients(store, later.id) == {2}
    # A new user with the id starts without the old tags.
    await store.upsert_users([UserProfile(id=1)])
    assert (await store.get_user(1)).tags == ()


async def test_blocked_reason_is_set_by_the_outcome_and_cleared_by_an_upsert(
    store: Store,
) -> None:
    await store.upsert_users([profile(1, "vip"), profile(2), profile(3)])
    created = await store.create_broadcast(NewBroadcast(content=HELLO, user_ids=(1, 2, 3)))
    await store.record_results(
        [
            outcome(created.id, 1, DeliveryState.BLOCKED),
            outcome(created.id, 2, DeliveryState.DEACTIVATED),
            outcome(created.id, 3, DeliveryState.SENT),
        ]
    )
    one, two, three = (await store.list_users(after=None, limit=10)).users
    assert (one.active, one.blocked_reason) == (False, "blocked")
    assert (two.active, two.blocked_reason) == (False, "deactivated")
    assert (three.active, three.blocked_reason, three.blocked_at) == (True, None, None)
    assert one.blocked_at is not None
    assert one.blocked_at >= created.created_at

    await store.upsert_users([UserProfile(id=1)])
    again = await store.get_user(1)
    assert (again.active, again.blocked_reason, again.blocked_at, again.tags) == (
        True,
        None,
        None,
        ("vip",),
    )
    assert await store.deactivate_users([1], reason=DeliveryState.DEACTIVATED) == 1
    assert (await store.get_user(1)).blocked_reason == "deactivated"
    with pytest.raises(ValueError, match="sent does not make a user inactive"):
        await store.deactivate_users([3], reason=DeliveryState.SENT)


async def test_many_recipients_with_mixed_reasons_keep_each_reason(store: Store) -> None:
    ids = tuple(range(1, 1201))
    created = await store.create_broadcast(NewBroadcast(content=HELLO, user_ids=ids))
    states = {i: DeliveryState.BLOCKED if i % 3 else DeliveryState.DEACTIVATED for i in ids}
    await store.record_results([outcome(created.id, i, states[i]) for i in ids])
    page = await store.list_users(after=None, limit=1000)
    page_two = await store.list_users(after=page.next_after, limit=1000)
    users = page.users + page_two.users
    assert len(users) == len(ids)
    assert {u.id: u.blocked_reason for u in users} == {i: s.value for i, s in states.items()}
    assert not any(u.active for u in users)


async def test_ten_thousand_users_with_tags_in_one_upsert(store: Store) -> None:
    users = [profile(i, f"t{i % 7}", "all", language_code="en") for i in range(1, 10_001)]
    assert await store.upsert_users(users) == 10_000
    created = await store.create_broadcast(
        NewBroadcast(content=HELLO, filter=UserFilter(tags=("t3",)))
    )
    assert created.total == len([i for i in range(1, 10_001) if i % 7 == 3])
    # Again, with other tags: the old ones are gone.
    assert await store.upsert_users([profile(u.id, "x") for u in users]) == 10_000
    assert (await store.get_user(10)).tags == ("x",)
    none_left = await store.create_broadcast(
        NewBroadcast(content=HELLO, filter=UserFilter(tags=("all",)))
    )
    assert none_left.total == 0


async def test_a_migrated_group_keeps_its_tags(store: Store) -> None:
    await store.upsert_users([profile(-5, "group"), profile(-7, "old"), profile(-1007, "new")])
    await store.migrate_chat(-5, -1005)
    assert (await store.get_user(-1005)).tags == ("group",)
    with pytest.raises(NotFound):
        await store.get_user(-5)
    # The new id is known already: the old row becomes inactive, each keeps its own tags.
    await store.migrate_chat(-7, -1007)
    old, new = await store.get_user(-7), await store.get_user(-1007)
    assert (old.active, old.blocked_reason, old.tags) == (False, None, ("old",))
    assert (new.active, new.tags) == (True, ("new",))


# -- validation -------------------------------------------------------------------------------


def violations(raised: pytest.ExceptionInfo[InvalidArgument]) -> dict[str, str]:
    return {v.field: v.description for v in raised.value.violations}


def test_tags_are_checked_and_normalized() -> None:
    (user,) = validate_users(
        [UserProfile(id=1, tags=("VIP", "vip", "beta:2"), language_code="PT-BR")]
    )
    assert (user.tags, user.language_code) == (("beta:2", "vip"), "pt-br")
    with pytest.raises(InvalidArgument) as raised:
        validate_users(
            [
                UserProfile(id=1, tags=("has space",)),
                UserProfile(id=2, tags=("",)),
                UserProfile(id=3, tags=("x" * 65,)),
                UserProfile(id=4, tags=tuple(f"t{i}" for i in range(101))),
                UserProfile(id=5, tags=("ünï",)),
            ]
        )
    found = violations(raised)
    assert found.keys() == {
        "users[0].tags[0]",
        "users[1].tags[0]",
        "users[2].tags[0]",
        "users[3].tags",
        "users[4].tags[0]",
    }
    assert "65 characters" in found["users[2].tags[0]"]
    assert "at most 100" in found["users[3].tags"]


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"user_ids": (1,), "all_users": True}, "all_users"),
        ({"user_ids": (1,), "filter": UserFilter()}, "filter"),
        ({"all_users": True, "filter": UserFilter()}, "filter"),
        ({"filter": UserFilter(tags=("bad tag",))}, "filter.tags[0]"),
        ({"filter": UserFilter(language_codes=("e n",))}, "filter.language_codes[0]"),
    ],
)
def test_one_audience_and_a_valid_filter(request_fields: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_send(SendRequest(message="hi", **request_fields), max_user_ids=10)  # type: ignore[arg-type]
    assert field in violations(raised)


def test_an_empty_filter_is_every_active_user() -> None:
    new = validate_send(SendRequest(message="hi", filter=UserFilter()), max_user_ids=10)
    assert (new.filter, new.user_ids, new.all_users) == (UserFilter(), (), False)
    tagged = validate_send(
        SendRequest(message="hi", filter=UserFilter(tags=("VIP",), language_codes=("EN",))),
        max_user_ids=10,
    )
    assert tagged.filter == UserFilter(tags=("vip",), language_codes=("en",))


# -- CSV parsing ------------------------------------------------------------------------------


async def lines_of(text: str) -> AsyncIterator[bytes]:
    for line in text.encode().splitlines(keepends=True):
        yield line


async def parse(text: str, chunk_size: int = 10_000) -> list[list[tuple[str, UserProfile]]]:
    chunks = []
    async for chunk in csv_chunks(lines_of(text), chunk_size=chunk_size):
        assert chunk.location is not None
        chunks.append([(chunk.location(i), user) for i, user in enumerate(chunk.users)])
    return chunks


async def test_csv_rows_become_chunks_of_users_named_by_line() -> None:
    text = (
        "\ufeffid,username,first_name,last_name,language_code,tags\r\n"
        '1,ann,"Ann, the first",Lee,en,vip beta\r\n'
        "\r\n"
        '2,,"Bo\r\nmultiline",,,\r\n'
        "3,,,,de,  spaced   tags \r\n"
    )
    chunks = await parse(text, chunk_size=2)
    # Two records per chunk; the blank line is a record of no user.
    assert [[location for location, _ in chunk] for chunk in chunks] == [
        ["line 2"],
        ["line 4", "line 6"],
    ]
    ((_, ann),) = chunks[0]
    (_, bo), (_, three) = chunks[1]
    assert ann == UserProfile(
        id=1,
        username="ann",
        first_name="Ann, the first",
        last_name="Lee",
        language_code="en",
        tags=("vip", "beta"),
    )
    assert bo == UserProfile(id=2, first_name="Bo\r\nmultiline", tags=())
    assert three.tags == ("spaced", "tags")
    # Columns in any order, some missing.
    (only,) = await parse("tags,id\nx,7\n")
    assert only == [("line 2", UserProfile(id=7, tags=("x",)))]


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("", "body", "header"),
        ("id,nickname\n", "line 1", "unknown column 'nickname'"),
        ("username\nann\n", "line 1", "id column"),
        ("id,username\n1,ann\n2\n", "line 3", "has 1 fields"),
        ("id,username\n1,ann\nx1,bo\n", "line 3.id", "'x1' is not a whole number"),
        ('id,username\n1,"ann\n', "line 2", "not closed"),
        ('id,username\n1,"ab"c\n', "line 2", "not valid CSV"),
        ('id,username\n1,ab"c\n2,x"\n3,y\n', "line 2", "inside an unquoted field"),
    ],
)
async def test_bad_csv_names_the_line(text: str, field: str, words: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await parse(text)
    assert words in violations(raised)[field]


@pytest.mark.parametrize(
    ("stray", "field", "words", "most_lines"),
    [
        ('1,O"Brien\n', "line 3", 'a quote (") inside an unquoted field', 3),
        ('1,"Brien\n', "line 3", "not closed within 100 lines or 64 KiB", 3 + 100),
        ('1,"' + "B" * 70_000 + "\n", "line 3", "not closed within 100 lines or 64 KiB", 3),
    ],
    ids=["quote inside a field", "quoted field never closed", "one huge open line"],
)
async def test_an_unbalanced_quote_stops_the_import_at_once(
    stray: str, field: str, words: str, most_lines: int
) -> None:
    """A stray quote must not make the parser buffer the rest of a big body: the import
    fails naming the record's first line, having read only up to the record's cap."""
    consumed = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal consumed
        for line in ("id,first_name\n", "7,Ann\n", stray):
            consumed += 1
            yield line.encode()
        for n in range(300_000):
            consumed += 1
            yield f"{n + 10},Name{n}\n".encode()

    with pytest.raises(InvalidArgument) as raised:
        async for _ in csv_chunks(body()):
            pass
    assert words in violations(raised)[field]
    assert "unbalanced quote" in violations(raised)[field]
    assert consumed <= most_lines


# -- the API, over gRPC and HTTP ---------------------------------------------------------------


def bad_request(error: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    detail = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(detail)
    return {v.field: v.description for v in detail.field_violations}


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

    empty = await send(stack, pb.SendMessageRequest(message="empty", filter=pb.UserFilter()))
    assert empty.total == 4

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
