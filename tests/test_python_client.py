"""The Python client (``clients/python/tgbroadcast_client``) and ``tgbroadcast send``.

Against the whole service over real sockets: the client's calls, its errors, and the CLI
as a user runs it (a child process) with ``--watch``. The RPCs the service does not serve
yet are checked against a small in-process servicer that records what the client sends and
answers what a test tells it to (request building and the error mapping).
"""

from __future__ import annotations

import ast
import asyncio
import io
import os
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from tests.fixtures.processes import TGBROADCAST
from tests.fixtures.stack import API_TOKEN, SECOND_API_TOKEN, Stack
from tests.fixtures.telegram import BOT_ID
from tgbroadcast.simulator import ChatState, ChatType
from tgbroadcast.v1 import broadcast_pb2 as pb
from tgbroadcast.v1 import broadcast_pb2_grpc as pb_grpc
from tgbroadcast_client import (
    AlreadyExists,
    BroadcastClient,
    BroadcastClientError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unauthenticated,
    Unavailable,
    enum_name,
    error_from_rpc,
    media_type_value,
    message_request,
)
from tgbroadcast_client import cli as send_cli

# The client only speaks gRPC: one backend is enough.
on_sqlite = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

WRONG_TOKEN = "not-the-api-token-at-all"


def client_for(stack: Stack, token: str = API_TOKEN) -> BroadcastClient:
    return BroadcastClient(stack.grpc_target, token)


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


def readme_example() -> str:
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    match = re.search(
        r"<!-- grpc-client-example:start -->\s*```python\n(.*?)```\s*"
        r"<!-- grpc-client-example:end -->",
        readme,
        re.S,
    )
    assert match, "README.md lost its Python gRPC client example"
    return match.group(1)


@on_sqlite
async def test_the_readme_example_runs_as_written(stack: Stack, tmp_path: Path) -> None:
    async with client_for(stack) as client:
        await client.upsert_users([pb.User(id=71, tags=["vip"]), pb.User(id=72, tags=["vip"])])
    stack.simulator.chats.declare(72, ChatState.BLOCKED)
    code = readme_example().replace("localhost:50051", stack.grpc_target)
    script = tmp_path / "example.py"
    script.write_text(code.replace("change-me-to-a-long-random-token", API_TOKEN))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        stdout, stderr = await proc.communicate()
    assert proc.returncode == 0, stderr.decode()
    *progress, counts = stdout.decode().splitlines()
    assert progress[-1] == "1 sent of 2"
    assert ast.literal_eval(counts) == {"sent": 1, "blocked": 1}


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


# The error mapping, from statuses built as the server builds them.


def rpc_error(code: int, message: str, *details: Any) -> grpc.aio.AioRpcError:
    packed = []
    for detail in details:
        wrapped = any_pb2.Any()
        wrapped.Pack(detail)
        packed.append(wrapped)
    status = rpc_status.to_status(status_pb2.Status(code=code, message=message, details=packed))
    return grpc.aio.AioRpcError(
        status.code,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(*status.trailing_metadata),
        details=status.details,
    )


@pytest.mark.parametrize(
    ("code", "error_type"),
    [
        (code_pb2.NOT_FOUND, NotFound),
        (code_pb2.FAILED_PRECONDITION, FailedPrecondition),
        (code_pb2.ALREADY_EXISTS, AlreadyExists),
        (code_pb2.UNAUTHENTICATED, Unauthenticated),
        (code_pb2.UNAVAILABLE, Unavailable),
        (code_pb2.INTERNAL, BroadcastClientError),
        (code_pb2.DEADLINE_EXCEEDED, BroadcastClientError),
    ],
)
def test_each_status_maps_to_its_error(code: int, error_type: type[Exception]) -> None:
    error = error_from_rpc(rpc_error(code, "broadcast 7 is completed"))
    assert type(error) is error_type
    assert error.details == "broadcast 7 is completed"
    assert error.code.value[0] == code


def test_invalid_argument_carries_the_bad_request_violations() -> None:
    bad_request = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field="user_ids[0]", description="is 0"),
            error_details_pb2.BadRequest.FieldViolation(field="message", description="empty"),
        ]
    )
    error = error_from_rpc(rpc_error(code_pb2.INVALID_ARGUMENT, "two problems", bad_request))
    assert isinstance(error, InvalidArgument)
    assert error.violations == (
        FieldViolation("user_ids[0]", "is 0"),
        FieldViolation("message", "empty"),
    )
    # Without a BadRequest detail (or with other details) there are no violations.
    other = error_from_rpc(
        rpc_error(code_pb2.INVALID_ARGUMENT, "bad", error_details_pb2.RetryInfo())
    )
    assert isinstance(other, InvalidArgument)
    assert other.violations == ()


# Every other call, against a servicer that records its requests and answers as told.


@dataclass
class Recorder(pb_grpc.BroadcastServiceServicer):
    requests: list[Any]
    abort: tuple[grpc.StatusCode, str] | None = None

    async def _answer(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any], response: Any
    ) -> Any:
        self.requests.append(request)
        metadata = dict(context.invocation_metadata() or ())
        assert metadata["authorization"] == f"Bearer {API_TOKEN}"
        if self.abort is not None:
            await context.abort(*self.abort)
        return response

    async def ListBroadcasts(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await self._answer(
            request, context, pb.ListBroadcastsResponse(next_page_token="next")
        )

    async def CancelBroadcast(self, request: Any, context: Any) -> Any:  # noqa: N802
        broadcast = pb.Broadcast(broadcast_id=request.broadcast_id)
        broadcast.status = pb.BROADCAST_STATUS_CANCELLED
        return await self._answer(request, context, pb.CancelBroadcastResponse(broadcast=broadcast))

    async def PauseBroadcast(self, request: Any, context: Any) -> Any:  # noqa: N802
        broadcast = pb.Broadcast(broadcast_id=request.broadcast_id)
        broadcast.status = pb.BROADCAST_STATUS_PAUSED
        return await self._answer(request, context, pb.PauseBroadcastResponse(broadcast=broadcast))

    async def ResumeBroadcast(self, request: Any, context: Any) -> Any:  # noqa: N802
        broadcast = pb.Broadcast(broadcast_id=request.broadcast_id)
        broadcast.status = pb.BROADCAST_STATUS_RUNNING
        return await self._answer(request, context, pb.ResumeBroadcastResponse(broadcast=broadcast))

    async def ListDeliveries(self, request: Any, context: Any) -> Any:  # noqa: N802
        result = pb.DeliveryResult(user_id=5)
        result.outcome = pb.DELIVERY_OUTCOME_PENDING
        return await self._answer(request, context, pb.ListDeliveriesResponse(results=[result]))

    async def PreviewMessage(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await self._answer(request, context, pb.PreviewMessageResponse(text="Hi Ann"))

    async def GetUser(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await self._answer(request, context, pb.GetUserResponse(user=pb.User(id=5)))

    async def DeleteUser(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await self._answer(request, context, pb.DeleteUserResponse())

    async def ImportUsers(self, request_iterator: Any, context: Any) -> Any:  # noqa: N802
        chunks = [chunk async for chunk in request_iterator]
        imported = sum(len(chunk.users) for chunk in chunks)
        return await self._answer(chunks, context, pb.ImportUsersResponse(imported=imported))


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[Recorder, str]]:
    servicer = Recorder(requests=[])  # type: ignore[abstract]  # serves the calls under test
    server = grpc.aio.server()
    pb_grpc.add_BroadcastServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def test_the_other_calls_send_what_they_are_given(recorder: tuple[Recorder, str]) -> None:
    servicer, target = recorder
    async with BroadcastClient(target, API_TOKEN) as client:
        page = await client.list_broadcasts(statuses=["running", pb.BROADCAST_STATUS_PAUSED])
        assert page.next_page_token == "next"
        assert (await client.cancel(7)).status == pb.BROADCAST_STATUS_CANCELLED
        assert (await client.pause(7)).status == pb.BROADCAST_STATUS_PAUSED
        assert (await client.resume(7)).status == pb.BROADCAST_STATUS_RUNNING
        deliveries = await client.list_deliveries(
            7, outcomes=["blocked", "pending"], page_size=10, page_token="t"
        )
        assert deliveries.results[0].outcome == pb.DELIVERY_OUTCOME_PENDING
        preview = await client.preview(
            message_request("Hi {first_name}", personalize=True), user_id=5
        )
        assert preview.text == "Hi Ann"
        assert (await client.get_user(5)).id == 5
        await client.delete_user(5)
        imported = await client.import_users([[pb.User(id=1), pb.User(id=2)], [pb.User(id=3)]])
        assert imported == 3
    (
        listed,
        cancelled,
        paused,
        resumed,
        listed_deliveries,
        previewed,
        got,
        deleted,
        chunks,
    ) = servicer.requests
    assert list(listed.statuses) == [pb.BROADCAST_STATUS_RUNNING, pb.BROADCAST_STATUS_PAUSED]
    assert cancelled.broadcast_id == paused.broadcast_id == resumed.broadcast_id == 7
    assert list(listed_deliveries.outcomes) == [
        pb.DELIVERY_OUTCOME_BLOCKED,
        pb.DELIVERY_OUTCOME_PENDING,
    ]
    assert (listed_deliveries.page_size, listed_deliveries.page_token) == (10, "t")
    assert previewed.user_id == 5
    assert previewed.message.personalize
    assert got.user_id == deleted.user_id == 5
    assert [len(chunk.users) for chunk in chunks] == [2, 1]


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (grpc.StatusCode.FAILED_PRECONDITION, FailedPrecondition),
        (grpc.StatusCode.NOT_FOUND, NotFound),
        (grpc.StatusCode.ALREADY_EXISTS, AlreadyExists),
    ],
)
async def test_the_other_calls_raise_mapped_errors(
    recorder: tuple[Recorder, str], status: grpc.StatusCode, error_type: type[Exception]
) -> None:
    servicer, target = recorder
    servicer.abort = (status, "broadcast 7 is completed")
    async with BroadcastClient(target, API_TOKEN) as client:
        with pytest.raises(error_type, match="broadcast 7 is completed"):
            await client.pause(7)
        with pytest.raises(error_type):
            await client.import_users([[pb.User(id=1)]])


# The CLI


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str


async def run_cli(*args: str, environ: dict[str, str]) -> Run:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TGB_", "TGBROADCAST_"))}
    proc = await asyncio.create_subprocess_exec(
        str(TGBROADCAST),
        "send",
        *args,
        env={**base, **environ},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        stdout, stderr = await proc.communicate()
    assert proc.returncode is not None
    return Run(proc.returncode, stdout.decode(), stderr.decode())


@on_sqlite
async def test_cli_sends_watches_and_summarises(stack: Stack) -> None:
    blocked = 33
    stack.simulator.chats.declare(blocked, ChatState.BLOCKED)
    run = await run_cli(
        "--target",
        stack.grpc_target,
        "--message",
        "Hello from the CLI!",
        "--user-id",
        "31",
        "32",
        "--user-id",
        str(blocked),
        "--watch",
        # The server's own setting works, several tokens and all: the first is used.
        environ={"TGB_SERVER_API_TOKEN": f"{API_TOKEN},{SECOND_API_TOKEN}"},
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    queued = re.fullmatch(r"broadcast (\d+): queued, 3 recipients", lines[0])
    assert queued, lines
    broadcast_id = int(queued.group(1))
    # Not a terminal: plain progress lines, no bar, then the summary.
    summary = f"broadcast {broadcast_id} completed: total=3 sent=2 failed=1 pending=0"
    assert summary in lines, lines
    at = lines.index(summary)
    progress, (failed, duration) = lines[1:at], lines[at + 1 :]
    assert progress, lines
    assert all(re.fullmatch(r"\w+: \d/3 done \(sent \d, failed \d\)", x) for x in progress)
    assert progress[-1] == "completed: 3/3 done (sent 2, failed 1)"
    assert failed == "  failed blocked: 1"
    assert re.fullmatch(r"  duration: \d+\.\d\ds", duration), duration
    assert "━" not in run.stdout
    assert API_TOKEN not in run.stdout + run.stderr
    sent = [c for c in stack.simulator.calls if c.method == "sendMessage"]
    assert sorted(int(c.params["chat_id"]) for c in sent) == [31, 32, blocked]


@on_sqlite
async def test_cli_exits_non_zero_when_the_watched_broadcast_is_cancelled(stack: Stack) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TGB_", "TGBROADCAST_"))}
    proc = await asyncio.create_subprocess_exec(
        str(TGBROADCAST),
        "send",
        "--target",
        stack.grpc_target,
        "--message",
        "never sent",
        "--user-id",
        "61",
        "--send-at",
        "2030-01-01T09:00:00Z",
        "--watch",
        env={**base, "TGBROADCAST_TOKEN": API_TOKEN},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    async with asyncio.timeout(60):
        first = (await proc.stdout.readline()).decode()
        queued = re.fullmatch(r"broadcast (\d+): scheduled, 1 recipients\n", first)
        assert queued, first
        async with client_for(stack) as client:
            await client.cancel(int(queued.group(1)))
        rest, stderr = await proc.communicate()
    assert proc.returncode == send_cli.EXIT_BROADCAST_FAILED, stderr.decode()
    summary = f"broadcast {queued.group(1)} cancelled: total=1 sent=0 failed=0 pending=1"
    assert summary in rest.decode().splitlines()
    assert not stack.simulator.calls


@on_sqlite
async def test_cli_reports_invalid_arguments_by_field(stack: Stack) -> None:
    run = await run_cli(
        "--target",
        stack.grpc_target,
        "--message",
        "hi",
        "--user-id",
        "0",
        environ={"TGBROADCAST_TOKEN": API_TOKEN},
    )
    assert run.returncode == send_cli.EXIT_ERROR
    assert "INVALID_ARGUMENT" in run.stderr
    assert re.search(r"^  user_ids\[0\]: ", run.stderr, re.M), run.stderr
    assert run.stdout == ""
    assert not stack.simulator.calls


@on_sqlite
async def test_cli_reports_a_wrong_token_without_showing_it(stack: Stack) -> None:
    run = await run_cli(
        "--target",
        stack.grpc_target,
        "--user-id",
        "1",
        "--token",
        WRONG_TOKEN,
        environ={},
    )
    assert run.returncode == send_cli.EXIT_ERROR
    assert "UNAUTHENTICATED" in run.stderr
    assert WRONG_TOKEN not in run.stdout + run.stderr


async def test_cli_needs_a_token_and_an_audience() -> None:
    no_token = await run_cli("--user-id", "1", environ={})
    assert no_token.returncode == send_cli.EXIT_USAGE
    assert "no API token" in no_token.stderr
    no_audience = await run_cli("--message", "hi", environ={"TGBROADCAST_TOKEN": "x"})
    assert no_audience.returncode == send_cli.EXIT_USAGE
    assert "one of the arguments --user-id --all-users --tag is required" in no_audience.stderr


@on_sqlite
async def test_cli_on_a_terminal_draws_a_progress_bar(stack: Stack) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = await send_cli.send(
        stack.grpc_target,
        API_TOKEN,
        message_request("bar", user_ids=[41, 42]),
        watch=True,
        stdout=out,
        stderr=err,
        terminal=True,
    )
    assert code == send_cli.EXIT_OK, err.getvalue()
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())  # colours, cursor moves
    assert "━" in shown  # rich's bar
    assert "2/2" in shown
    assert re.search(r"^broadcast \d+ completed: total=2 sent=2 failed=0 pending=0$", shown, re.M)


@on_sqlite
async def test_cli_copies_and_forwards_a_channel_post(stack: Stack) -> None:
    channel = -1001234567890
    stack.simulator.chats.declare(channel, chat_type=ChatType.CHANNEL)
    post = stack.simulator.post_message(bot_id=BOT_ID, chat_id=channel, text="Channel news")
    environ = {"TGBROADCAST_TOKEN": API_TOKEN}
    for kind, method, chat in (("copy", "copyMessage", 71), ("forward", "forwardMessage", 72)):
        run = await run_cli(
            "--target",
            stack.grpc_target,
            "--media-type",
            kind,
            f"--source={channel}:{post['message_id']}",
            "--user-id",
            str(chat),
            "--watch",
            environ=environ,
        )
        assert run.returncode == 0, run.stderr
        assert "completed: total=1 sent=1 failed=0" in run.stdout
        (call,) = [c for c in stack.simulator.calls if c.method == method]
        assert int(call.params["chat_id"]) == chat
        assert int(call.params["from_chat_id"]) == channel
        assert int(call.params["message_id"]) == post["message_id"]
    received = stack.simulator.messages_by_chat(BOT_ID)
    assert received[71][0]["text"] == "Channel news"


@on_sqlite
async def test_cli_sends_an_album_from_items_and_from_a_file(stack: Stack, tmp_path: Path) -> None:
    environ = {"TGBROADCAST_TOKEN": API_TOKEN}
    run = await run_cli(
        "--target",
        stack.grpc_target,
        "--media-type",
        "album",
        "--parse-mode",
        "HTML",
        "--album-item",
        "photo:https://cdn.example.com:443/a.jpg:<b>One</b>: with a colon",
        "--album-item",
        "photo:https://cdn.example.com/b.jpg",
        "--user-id",
        "73",
        "--watch",
        environ=environ,
    )
    assert run.returncode == 0, run.stderr
    album_file = tmp_path / "album.json"
    album_file.write_text(
        '[{"media_type": "video", "media_url": "https://cdn.example.com/c.mp4", '
        '"caption": "*Two*", "has_spoiler": true}, '
        '{"media_type": "video", "media_url": "https://cdn.example.com/d.mp4"}]'
    )
    run = await run_cli(
        "--target",
        stack.grpc_target,
        "--album-file",  # the media type follows from the album
        str(album_file),
        "--parse-mode",
        "MarkdownV2",
        "--user-id",
        "74",
        "--watch",
        environ=environ,
    )
    assert run.returncode == 0, run.stderr
    first, second = (c for c in stack.simulator.calls if c.method == "sendMediaGroup")
    assert [(i["type"], i["media"]) for i in first.params["media"]] == [
        ("photo", "https://cdn.example.com:443/a.jpg"),
        ("photo", "https://cdn.example.com/b.jpg"),
    ]
    assert first.params["media"][0]["caption"] == "<b>One</b>: with a colon"
    assert first.params["media"][0]["parse_mode"] == "HTML"
    assert "caption" not in first.params["media"][1]
    assert [(i["type"], i.get("caption")) for i in second.params["media"]] == [
        ("video", "*Two*"),
        ("video", None),
    ]
    assert second.params["media"][0]["parse_mode"] == "MarkdownV2"
    assert second.params["media"][0]["has_spoiler"] is True


CLI_USAGE_ERRORS = [
    (["--media-type", "copy"], "--media-type copy needs --source CHAT_ID:MESSAGE_ID"),
    (["--media-type", "forward"], "--media-type forward needs --source"),
    (["--source", "5:6"], "--source is only for --media-type copy or forward, not text"),
    (["--media-type", "copy", "--source", "abc"], "not CHAT_ID:MESSAGE_ID"),
    (["--media-type", "copy", "--source", "5:0"], "not CHAT_ID:MESSAGE_ID"),
    (["--media-type", "album"], "--media-type album needs --album-item"),
    (["--media-type", "photo", "--album-item", "photo:x"], "only for --media-type album"),
    (["--album-item", "photo"], "not TYPE:URL_OR_FILE_ID[:CAPTION]"),
    (["--album-item", "gif:https://x/y.gif"], "unknown media type 'gif'"),
    (["--media-type", "photo"], "--media-type photo needs --media-url or --media-file"),
    (["--media-type", "copy", "--source", "5:6", "--media-url", "x"], "not for --media-type copy"),
    (["--parse-mode", "markdown"], "unknown parse mode 'markdown'"),
]


@pytest.mark.parametrize(("args", "message"), CLI_USAGE_ERRORS)
async def test_cli_refuses_a_kind_without_what_it_needs(
    args: list[str], message: str, tmp_path: Path
) -> None:
    # No service: a usage error is found before any connection.
    run = await run_cli(
        "--target", "127.0.0.1:9", *args, "--user-id", "1", environ={"TGBROADCAST_TOKEN": "x"}
    )
    assert run.returncode == send_cli.EXIT_USAGE, run.stderr
    assert message in run.stderr
    assert run.stdout == ""


async def test_cli_refuses_a_bad_album_file(tmp_path: Path) -> None:
    bad = {
        "not json": ("[", "not JSON"),
        "not a list": ('{"media_type": "photo"}', "must be a JSON array"),
        "unknown field": ('[{"media_type": "photo", "url": "x"}]', "item [0]: unknown field 'url'"),
        "no url": ('[{"media_type": "photo"}]', "item [0]: needs media_type and media_url"),
    }
    for name, (text, message) in bad.items():
        path = tmp_path / f"{name}.json"
        path.write_text(text)
        run = await run_cli(
            "--album-file", str(path), "--user-id", "1", environ={"TGBROADCAST_TOKEN": "x"}
        )
        assert run.returncode == send_cli.EXIT_USAGE, (name, run.stderr)
        assert message in run.stderr, name


def readme_lifecycle_example() -> str:
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    match = re.search(
        r"<!-- grpc-lifecycle-example:start -->\s*```python\n(.*?)```\s*"
        r"<!-- grpc-lifecycle-example:end -->",
        readme,
        re.S,
    )
    assert match, "README.md lost its pause/resume/cancel and preview example"
    return match.group(1)


@on_sqlite
async def test_the_readme_lifecycle_example_runs_as_written(stack: Stack, tmp_path: Path) -> None:
    async with client_for(stack) as client:
        await client.upsert_users(
            [pb.User(id=111, first_name="Ann", tags=["vip"]), pb.User(id=112, tags=["vip"])]
        )
    code = readme_lifecycle_example().replace("localhost:50051", stack.grpc_target)
    script = tmp_path / "lifecycle.py"
    script.write_text(code.replace("change-me-to-a-long-random-token", API_TOKEN))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        stdout, stderr = await proc.communicate()
    assert proc.returncode == 0, stderr.decode()
    preview, paused, cancelled = stdout.decode().splitlines()
    assert preview == "Hi Ann!"
    # Paused while queued or running, or refused as already finished: both are documented.
    assert re.fullmatch(
        r"paused with \d pending|FAILED_PRECONDITION: broadcast \d+ is completed\b.*", paused
    ), paused
    assert cancelled == "cancelled"
    async with client_for(stack) as client:
        listed = await client.list_broadcasts()
    statuses = [enum_name("BroadcastStatus", b.status) for b in listed.broadcasts]
    assert statuses[0] == "cancelled"
    assert statuses[1] in ("queued", "running", "completed"), statuses
    assert not any(c.params.get("text") == "Tomorrow's news" for c in stack.simulator.calls)
