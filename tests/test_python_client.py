"""The Python client (``clients/python/tgbroadcast_client``) against the whole service over
real sockets: its calls, its errors, and the documented examples as a user runs them.

The client's request building and error mapping for every call are in
``test_python_client_errors``; ``tgbroadcast send`` is in ``test_send_cli``.
"""

from __future__ import annotations

import ast
import re
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from tests.fixtures.clients import WRONG_TOKEN, client_for
from tests.fixtures.docs import aimed_at, doc_example, run_script
from tests.fixtures.stack import API_TOKEN, Stack, on_sqlite
from tgbroadcast.simulator import ChatState
from tgbroadcast.v1 import broadcast_pb2 as pb
from tgbroadcast_client import (
    AlreadyExists,
    BroadcastClient,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unauthenticated,
    Unavailable,
    enum_name,
    media_type_value,
    message_request,
)


@on_sqlite
async def test_send_watch_and_get_over_a_real_socket(stack: Stack) -> None:
    blocked = 13
    stack.simulator.chats.declare(blocked, ChatState.BLOCKED)
    async with client_for(stack) as client:
        upserted = await client.upsert_users(
            [pb.User(id=11, first_name="Ann", language_code="en"), pb.User(id=12)]
        )
        assert upserted == 2
        page = await client.list_users(page_size=1)
        assert [u.id for u in page.users] == [11]
        assert page.users[0].first_name == "Ann"
        assert [u.id async for u in client.iter_users(page_size=1)] == [11, 12]

        sent = await client.send("Hello from Python!", user_ids=[11, 12, blocked, 12])
        assert sent.total == 3
        assert not sent.replayed

        updates = [update async for update in client.watch(sent.broadcast_id)]
        *results, last = updates
        assert sorted(u.result.user_id for u in results) == [11, 12, blocked]
        assert not last.HasField("result")
        assert last.progress.status == pb.BROADCAST_STATUS_COMPLETED
        outcomes = {u.result.user_id: u.result.outcome for u in results}
        assert outcomes[blocked] == pb.DELIVERY_OUTCOME_BLOCKED

        # Several outcomes to a message (the broadcast is finished: its replay's page).
        batched = [update async for update in client.watch(sent.broadcast_id, max_batch=2)]
        assert [[r.user_id for r in u.results] for u in batched] == [
            sorted([11, 12, blocked])[:2],
            sorted([11, 12, blocked])[2:],
            [],
        ]
        assert batched[-1].progress == last.progress
        # From now on: none of the outcomes known already, the closing message alone.
        now = [update async for update in client.watch(sent.broadcast_id, from_now=True)]
        assert [(u.HasField("result"), u.progress) for u in now] == [(False, last.progress)]

        broadcast = await client.get(sent.broadcast_id)
    assert broadcast.status == pb.BROADCAST_STATUS_COMPLETED
    assert (broadcast.sent, broadcast.failed, broadcast.pending) == (2, 1, 0)
    assert dict(broadcast.outcome_counts) == {"sent": 2, "blocked": 1}
    texts = {c.params["text"] for c in stack.simulator.calls if c.method == "sendMessage"}
    assert texts == {"Hello from Python!"}


@on_sqlite
async def test_leaving_a_watch_early_cancels_the_stream(stack: Stack) -> None:
    async with client_for(stack) as client:
        sent = await client.send("one by one", user_ids=[21, 22])
        watch = client.watch(sent.broadcast_id)
        first = await anext(aiter(watch))
        assert first.progress.total == 2
        await watch.aclose()
        # The channel still works after the abandoned stream.
        assert (await client.get(sent.broadcast_id)).broadcast_id == sent.broadcast_id


@on_sqlite
async def test_invalid_argument_names_every_field(stack: Stack) -> None:
    async with client_for(stack) as client:
        with pytest.raises(InvalidArgument) as raised:
            await client.send("", user_ids=[0, 5], media_type="photo")
    fields = {v.field for v in raised.value.violations}
    assert {"user_ids[0]", "media_url"} <= fields, raised.value.violations
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert str(raised.value).startswith("INVALID_ARGUMENT: ")
    assert not stack.simulator.calls


@on_sqlite
async def test_unknown_broadcast_is_not_found(stack: Stack) -> None:
    async with client_for(stack) as client:
        with pytest.raises(NotFound):
            await client.get(424242)
        with pytest.raises(NotFound):
            [u async for u in client.watch(424242)]


@on_sqlite
async def test_a_wrong_token_is_unauthenticated_and_never_shown(stack: Stack) -> None:
    client = client_for(stack, WRONG_TOKEN)
    assert WRONG_TOKEN not in repr(client)
    async with client:
        with pytest.raises(Unauthenticated) as raised:
            await client.send("hi", user_ids=[1])
    assert WRONG_TOKEN not in str(raised.value)
    assert not stack.simulator.calls


@on_sqlite
async def test_users_lifecycle_reports_and_preview_over_a_real_socket(stack: Stack) -> None:
    blocked = 53
    stack.simulator.chats.declare(blocked, ChatState.BLOCKED)
    async with client_for(stack) as client:
        imported = await client.import_users(
            [
                [pb.User(id=51, first_name="Ann", tags=["vip"]), pb.User(id=52, tags=["vip"])],
                [pb.User(id=blocked, tags=["vip"]), pb.User(id=54, language_code="de")],
            ]
        )
        assert imported == 4
        vip = await client.list_users(tags=["vip"])
        assert [u.id for u in vip.users] == [51, 52, blocked]
        assert list((await client.get_user(51)).tags) == ["vip"]
        await client.delete_user(54)
        with pytest.raises(NotFound):
            await client.get_user(54)

        preview = await client.preview(
            message_request("Hi {first_name|there}!", personalize=True, user_ids=[51]),
            user_id=51,
        )
        assert preview.text == "Hi Ann!"

        # The same idempotency key: the same broadcast; with another request: refused.
        sent = await client.send("For VIPs", tags=["vip"], idempotency_key="vip-1")
        assert sent.total == 3
        again = await client.send("For VIPs", tags=["vip"], idempotency_key="vip-1")
        assert (again.broadcast_id, again.replayed) == (sent.broadcast_id, True)
        with pytest.raises(AlreadyExists):
            await client.send("Something else", tags=["vip"], idempotency_key="vip-1")
        [update async for update in client.watch(sent.broadcast_id)]

        failed = await client.list_deliveries(sent.broadcast_id, outcomes=["blocked"])
        assert [(r.user_id, r.outcome) for r in failed.results] == [
            (blocked, pb.DELIVERY_OUTCOME_BLOCKED)
        ]
        with pytest.raises(FailedPrecondition, match="completed"):
            await client.pause(sent.broadcast_id)

        later = await client.send("Later", user_ids=[51], send_at=datetime(2030, 1, 1, tzinfo=UTC))
        assert later.status == pb.BROADCAST_STATUS_SCHEDULED
        cancelled = await client.cancel(later.broadcast_id)
        assert cancelled.status == pb.BROADCAST_STATUS_CANCELLED
        with pytest.raises(FailedPrecondition, match="cancelled"):
            await client.resume(later.broadcast_id)
        listed = await client.list_broadcasts(statuses=["cancelled"])
        assert [b.broadcast_id for b in listed.broadcasts] == [later.broadcast_id]
        edited = await client.edit(sent.broadcast_id, "<i>Fixed</i>", parse_mode="html")
        assert (edited.content_version, edited.editing) == (2, True)
        updates = [update async for update in client.watch(sent.broadcast_id)]
        assert updates[-1].progress.edited == 2
        changed = {u.result.user_id: u.result.edit for u in updates if u.result.edit}
        assert changed == {51: pb.EDIT_OUTCOME_EDITED, 52: pb.EDIT_OUTCOME_EDITED}
        recalling = await client.recall(sent.broadcast_id)
        assert recalling.status == pb.BROADCAST_STATUS_RECALLING
        updates = [update async for update in client.watch(sent.broadcast_id)]
        assert updates[-1].progress.status == pb.BROADCAST_STATUS_RECALLED
        recalled = {u.result.user_id: u.result.recall for u in updates if u.result.recall}
        assert recalled == {51: pb.RECALL_OUTCOME_DELETED, 52: pb.RECALL_OUTCOME_DELETED}


@on_sqlite
async def test_the_documented_client_example_runs_as_written(stack: Stack, tmp_path: Path) -> None:
    async with client_for(stack) as client:
        await client.upsert_users([pb.User(id=71, tags=["vip"]), pb.User(id=72, tags=["vip"])])
    stack.simulator.chats.declare(72, ChatState.BLOCKED)
    example = doc_example("grpc-client-example")
    code = aimed_at(example, token=API_TOKEN, grpc_target=stack.grpc_target)
    run = await run_script(code, tmp_path / "example.py")
    assert run.returncode == 0, run.stderr
    *progress, counts = run.stdout.splitlines()
    assert progress[-1] == "1 sent of 2"
    assert ast.literal_eval(counts) == {"sent": 1, "blocked": 1}


@on_sqlite
async def test_the_documented_synchronous_client_example_runs_as_written(
    stack: Stack, tmp_path: Path
) -> None:
    stack.simulator.chats.declare(222, ChatState.BLOCKED)
    example = doc_example("sync-client-example")
    code = aimed_at(example, token=API_TOKEN, grpc_target=stack.grpc_target)
    run = await run_script(code, tmp_path / "sync_example.py")
    assert run.returncode == 0, run.stderr
    *results, counts = run.stdout.splitlines()
    assert sorted(results) == ["111 sent", "222 blocked"]
    assert ast.literal_eval(counts) == {"sent": 1, "blocked": 1}


@on_sqlite
async def test_the_documented_lifecycle_example_runs_as_written(
    stack: Stack, tmp_path: Path
) -> None:
    async with client_for(stack) as client:
        await client.upsert_users(
            [pb.User(id=111, first_name="Ann", tags=["vip"]), pb.User(id=112, tags=["vip"])]
        )
    example = doc_example("grpc-lifecycle-example")
    code = aimed_at(example, token=API_TOKEN, grpc_target=stack.grpc_target)
    run = await run_script(code, tmp_path / "lifecycle.py")
    assert run.returncode == 0, run.stderr
    preview, *held, cancelled = run.stdout.splitlines()
    assert preview == "Hi Ann!"
    # Paused while queued or running, or refused as already finished, or paused and then
    # finished by the sends in flight at the pause (so the resume is refused): all documented.
    refused = r"FAILED_PRECONDITION: broadcast \d+ is completed\b.*"
    assert re.fullmatch(rf"paused with \d pending(\n{refused})?|{refused}", "\n".join(held)), held
    assert cancelled == "cancelled"
    async with client_for(stack) as client:
        listed = await client.list_broadcasts()
    statuses = [enum_name("BroadcastStatus", b.status) for b in listed.broadcasts]
    assert statuses[0] == "cancelled"
    assert statuses[1] in ("queued", "running", "completed"), statuses
    assert not any(c.params.get("text") == "Tomorrow's news" for c in stack.simulator.calls)


async def test_an_unreachable_service_is_unavailable() -> None:
    async with BroadcastClient("127.0.0.1:1", API_TOKEN, timeout=10) as client:
        with pytest.raises(Unavailable) as raised:
            await client.get(1)
    assert API_TOKEN not in str(raised.value)


def test_a_token_is_required() -> None:
    with pytest.raises(ValueError, match="API token is required"):
        BroadcastClient("127.0.0.1:1", "")


def test_message_request_builds_the_whole_request() -> None:
    request = message_request(
        "<b>Hi</b>",
        tags=["vip"],
        media_type="photo",
        media_url="https://example.com/a.jpg",
        parse_mode="html",
        reply_markup=pb.InlineKeyboardMarkup(
            rows=[pb.InlineKeyboardRow(buttons=[pb.InlineKeyboardButton(text="Go", url="u")])]
        ),
        idempotency_key="k-1",
        personalize=True,
    )
    assert request.media_type == pb.MEDIA_TYPE_PHOTO
    assert request.parse_mode == pb.PARSE_MODE_HTML
    assert list(request.filter.tags) == ["vip"]
    assert request.reply_markup.rows[0].buttons[0].url == "u"
    assert not request.HasField("send_at")
    assert message_request("x", user_ids=[1]).HasField("filter") is False
    assert media_type_value(pb.MEDIA_TYPE_ALBUM) == pb.MEDIA_TYPE_ALBUM
    assert media_type_value("") == pb.MEDIA_TYPE_UNSPECIFIED
    assert enum_name("BroadcastStatus", pb.BROADCAST_STATUS_CANCELLED) == "cancelled"
    assert enum_name("DeliveryOutcome", pb.DELIVERY_OUTCOME_CHAT_NOT_FOUND) == "chat_not_found"
    with pytest.raises(ValueError, match="unknown MediaType 'gif'; one of: text, photo"):
        media_type_value("gif")
    with pytest.raises(ValueError, match="send_at needs a time zone"):
        message_request("x", user_ids=[1], send_at=datetime(2030, 1, 1, 9))
    later = message_request("x", user_ids=[1], send_at=datetime(2030, 1, 1, 9, tzinfo=UTC))
    assert later.send_at.ToDatetime(tzinfo=UTC) == datetime(2030, 1, 1, 9, tzinfo=UTC)
