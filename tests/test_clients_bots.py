"""The Python clients and the command line with several bots: ``bot=`` on every call that
sends, lists broadcasts or touches users, the bots calls, ``tgbroadcast send --bot`` and
``tgbroadcast bots``.

What each client puts on the wire is checked against a small in-process servicer that
records every request (threads serve it, so the blocking client and the command line call it
from the test's own thread); what the service makes of it, against the whole stack with two
configured bots on the simulator, each with its own token.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from tests.fixtures.environ import API_TOKEN
from tests.fixtures.processes import TGBROADCAST
from tests.fixtures.stack import Backend, Stack, start_stack
from tests.fixtures.telegram import BOT_ID, OTHER_BOT_TOKEN
from tgbroadcast.simulator import Simulator
from tgbroadcast.v1 import broadcast_pb2 as pb
from tgbroadcast.v1 import broadcast_pb2_grpc as pb_grpc
from tgbroadcast_client import BroadcastClient, Client, NotFound, cli_bots, message_request
from tgbroadcast_client import cli as send_cli

NEW_BOT_TOKEN = "555000111:AAGnewBotTokenSecretPart_0123456789xy"
"""A well-formed token the tests hand to ``create``: it must show nowhere."""
OTHER_BOT_ID = int(OTHER_BOT_TOKEN.split(":")[0])
SHOP = pb.Bot(name="shop", bot_id=555000111, username="shop_bot", rate_limit=30.0)


@dataclass
class Recorder(pb_grpc.BroadcastServiceServicer):
    """Answers every call it knows with a fixed response, after recording the request."""

    requests: list[tuple[str, Any]] = field(default_factory=list)
    deadlines: list[tuple[str, float | None]] = field(default_factory=list)
    """Each call's seconds left when it was answered (astronomical: it had no deadline)."""
    abort: tuple[grpc.StatusCode, str] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _answer(self, method: str, request: Any, context: grpc.ServicerContext, answer: Any) -> Any:
        assert dict(context.invocation_metadata())["authorization"] == f"Bearer {API_TOKEN}"
        with self.lock:
            self.requests.append((method, request))
            self.deadlines.append((method, context.time_remaining()))
        if self.abort is not None:
            context.abort(*self.abort)
        return answer

    def of(self, method: str) -> list[Any]:
        with self.lock:
            return [request for name, request in self.requests if name == method]

    def SendMessage(self, request: Any, context: Any) -> Any:  # noqa: N802
        answer = pb.SendMessageResponse(broadcast_id=7, total=len(request.user_ids))
        return self._answer("SendMessage", request, context, answer)

    def PreviewMessage(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._answer("PreviewMessage", request, context, pb.PreviewMessageResponse())

    def ListBroadcasts(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._answer("ListBroadcasts", request, context, pb.ListBroadcastsResponse())

    def UpsertUsers(self, request: Any, context: Any) -> Any:  # noqa: N802
        answer = pb.UpsertUsersResponse(upserted=len(request.users))
        return self._answer("UpsertUsers", request, context, answer)

    def ImportUsers(self, request_iterator: Any, context: Any) -> Any:  # noqa: N802
        chunks = list(request_iterator)
        answer = pb.ImportUsersResponse(imported=sum(len(c.users) for c in chunks))
        return self._answer("ImportUsers", chunks, context, answer)

    def ListUsers(self, request: Any, context: Any) -> Any:  # noqa: N802
        # Two pages, so iter_users is seen to carry the bot on each.
        answer = pb.ListUsersResponse(
            users=[pb.User(id=1)], next_page_token="" if request.page_token else "more"
        )
        return self._answer("ListUsers", request, context, answer)

    def GetUser(self, request: Any, context: Any) -> Any:  # noqa: N802
        answer = pb.GetUserResponse(user=pb.User(id=request.user_id))
        return self._answer("GetUser", request, context, answer)

    def DeleteUser(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._answer("DeleteUser", request, context, pb.DeleteUserResponse())

    def CreateBot(self, request: Any, context: Any) -> Any:  # noqa: N802
        bot = pb.Bot(name=request.name, bot_id=555000111, username="shop_bot", source="api")
        bot.rate_limit = request.rate_limit or 30.0
        bot.paid_rate_limit = request.paid_rate_limit or 1000.0
        bot.created_at.FromSeconds(1_900_000_000)
        return self._answer("CreateBot", request, context, pb.CreateBotResponse(bot=bot))

    def ListBots(self, request: Any, context: Any) -> Any:  # noqa: N802
        default = pb.Bot(name="default", bot_id=BOT_ID, rate_limit=30.0, source="config")
        answer = pb.ListBotsResponse(bots=[default, SHOP])
        return self._answer("ListBots", request, context, answer)

    def GetBot(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._answer("GetBot", request, context, pb.GetBotResponse(bot=SHOP))

    def DeleteBot(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._answer("DeleteBot", request, context, pb.DeleteBotResponse())


@pytest.fixture
def recorder() -> Iterator[tuple[Recorder, str]]:
    servicer = Recorder()  # type: ignore[abstract]  # serves the calls under test
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_BroadcastServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        server.stop(None)


def assert_bot_on_every_call(servicer: Recorder, bot: str) -> None:
    """What :func:`user_and_broadcast_calls` sent all named ``bot`` (``""``: none)."""
    sent = servicer.of("SendMessage")
    assert [r.bot for r in sent] == [bot, bot]
    assert [r.message.bot for r in servicer.of("PreviewMessage")] == [bot]
    assert [r.bot for r in servicer.of("ListBroadcasts")] == [bot]
    assert [r.bot for r in servicer.of("UpsertUsers")] == [bot]
    (chunks,) = servicer.of("ImportUsers")
    assert [c.bot for c in chunks] == [bot, bot]
    assert [r.bot for r in servicer.of("ListUsers")] == [bot] * 3  # one page, then two
    assert [r.bot for r in servicer.of("GetUser")] == [bot]
    assert [r.bot for r in servicer.of("DeleteUser")] == [bot]


async def test_the_async_client_names_the_bot_on_every_call(
    recorder: tuple[Recorder, str],
) -> None:
    servicer, target = recorder
    async with BroadcastClient(target, API_TOKEN) as client:
        await client.send("hi", user_ids=[1], bot="shop")
        await client.send_request(message_request("hi", all_users=True, bot="shop"))
        await client.preview(message_request("Hi {first_name}", bot="shop"), user_id=1)
        await client.list_broadcasts(statuses=["running"], bot="shop")
        assert await client.upsert_users([pb.User(id=1)], bot="shop") == 1
        chunks = [[pb.User(id=1)], [pb.User(id=2)]]
        assert await client.import_users(chunks, bot="shop") == 2
        await client.list_users(bot="shop")
        assert [u.id async for u in client.iter_users(bot="shop")] == [1, 1]
        assert (await client.get_user(1, bot="shop")).id == 1
        await client.delete_user(1, bot="shop")
    assert_bot_on_every_call(servicer, "shop")


async def test_without_bot_the_async_client_leaves_the_choice_to_the_server(
    recorder: tuple[Recorder, str],
) -> None:
    servicer, target = recorder

    async def chunks() -> AsyncIterator[list[pb.User]]:
        yield [pb.User(id=1)]
        yield [pb.User(id=2)]

    async with BroadcastClient(target, API_TOKEN) as client:
        await client.send("hi", user_ids=[1])
        await client.send_request(message_request("hi", all_users=True))
        await client.preview(message_request("Hi"), user_id=1)
        await client.list_broadcasts()
        await client.upsert_users([pb.User(id=1)])
        await client.import_users(chunks())
        await client.list_users()
        _ = [u async for u in client.iter_users()]
        await client.get_user(1)
        await client.delete_user(1)
    assert_bot_on_every_call(servicer, "")
    async with BroadcastClient(target, API_TOKEN) as client:
        await client.import_users([[pb.User(id=3)]], timeout=600)
    # Unary calls carry the client's timeout; the import stream only one of its own.
    deadlines = dict(servicer.deadlines[:-1])
    assert (deadlines["ImportUsers"] or 0) > 10**9  # gRPC's "infinite future": none
    # (gRPC's deadline on the wire is rounded: the server may see a little more.)
    assert 0 < (deadlines["GetUser"] or 0) < 31
    assert 31 < (servicer.deadlines[-1][1] or 0) < 601


def test_the_blocking_client_names_the_bot_on_every_call(recorder: tuple[Recorder, str]) -> None:
    servicer, target = recorder
    with Client(target, API_TOKEN) as client:
        client.send("hi", user_ids=[1], bot="shop")
        client.send_request(message_request("hi", all_users=True, bot="shop"))
        client.preview(message_request("Hi {first_name}", bot="shop"), user_id=1)
        client.list_broadcasts(bot="shop")
        client.upsert_users([pb.User(id=1)], bot="shop")
        assert client.import_users([[pb.User(id=1)], [pb.User(id=2)]], bot="shop") == 2
        client.list_users(bot="shop")
        assert [u.id for u in client.iter_users(bot="shop")] == [1, 1]
        client.get_user(1, bot="shop")
        client.delete_user(1, bot="shop")
    assert_bot_on_every_call(servicer, "shop")


async def test_the_bots_calls_of_both_clients(recorder: tuple[Recorder, str]) -> None:
    servicer, target = recorder
    async with BroadcastClient(target, API_TOKEN) as client:
        created = await client.create_bot(
            "shop", NEW_BOT_TOKEN, rate_limit=25, paid_rate_limit=500, api_url="http://x"
        )
        assert (created.name, created.rate_limit, created.source) == ("shop", 25.0, "api")
        assert [b.name for b in await client.list_bots()] == ["default", "shop"]
        assert (await client.get_bot("shop")).username == "shop_bot"
        await client.delete_bot("shop")

    def blocking() -> None:
        with Client(target, API_TOKEN) as client:
            assert client.create_bot("news", NEW_BOT_TOKEN).paid_rate_limit == 1000.0
            assert [b.name for b in client.list_bots()] == ["default", "shop"]
            assert client.get_bot("shop").bot_id == SHOP.bot_id
            client.delete_bot("news")

    await asyncio.to_thread(blocking)
    first, second = servicer.of("CreateBot")
    assert (first.name, first.token, first.rate_limit, first.paid_rate_limit, first.api_url) == (
        "shop",
        NEW_BOT_TOKEN,
        25.0,
        500.0,
        "http://x",
    )
    assert (second.name, second.rate_limit, second.paid_rate_limit, second.api_url) == (
        "news",
        0.0,
        0.0,
        "",
    )
    assert [r.name for r in servicer.of("GetBot")] == ["shop", "shop"]
    assert [r.name for r in servicer.of("DeleteBot")] == ["shop", "news"]


# The command line, in process.


def run_cli(
    main: Any, *argv: str, environ: dict[str, str] | None = None, stdin: str = ""
) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    environ = {"TGBROADCAST_TOKEN": API_TOKEN, **(environ or {})}
    extra = {"stdin": io.StringIO(stdin)} if main is cli_bots.main else {}
    code = main(list(argv), environ=environ, stdout=out, stderr=err, **extra)
    return code, out.getvalue(), err.getvalue()


def test_send_takes_the_bot_from_the_flag_or_the_environment(
    recorder: tuple[Recorder, str],
) -> None:
    servicer, target = recorder
    base = ("--target", target, "--message", "hi", "--user-id", "1")
    assert run_cli(send_cli.main, *base, "--bot", "shop")[0] == send_cli.EXIT_OK
    with_env = run_cli(send_cli.main, *base, environ={"TGBROADCAST_BOT": "news"})
    assert with_env[0] == send_cli.EXIT_OK
    flag_wins = run_cli(send_cli.main, *base, "--bot", "shop", environ={"TGBROADCAST_BOT": "x"})
    assert flag_wins[0] == send_cli.EXIT_OK
    assert run_cli(send_cli.main, *base)[0] == send_cli.EXIT_OK
    assert [r.bot for r in servicer.of("SendMessage")] == ["shop", "news", "shop", ""]


def test_bots_create_reads_the_token_from_the_environment_or_stdin(
    recorder: tuple[Recorder, str],
) -> None:
    servicer, target = recorder
    code, out, err = run_cli(
        cli_bots.main,
        "create",
        "shop",
        "--target",
        target,
        "--rate-limit",
        "25",
        environ={"TGBROADCAST_BOT_TOKEN": NEW_BOT_TOKEN},
    )
    assert code == cli_bots.EXIT_OK, err
    assert out.splitlines()[:3] == ["bot shop created", "  name: shop", "  bot_id: 555000111"]
    assert "  username: shop_bot" in out.splitlines()
    code, out, err = run_cli(
        cli_bots.main,
        "create",
        "news",
        "--target",
        target,
        "--bot-token-env",
        "NEWS_TOKEN",
        "--json",
        environ={"NEWS_TOKEN": NEW_BOT_TOKEN},
    )
    assert code == cli_bots.EXIT_OK, err
    shown = json.loads(out)
    assert shown["name"] == "news"
    assert shown["bot_id"] == 555000111
    assert shown["created_at"] == "2030-03-17T17:46:40Z"
    code, out, err = run_cli(
        cli_bots.main,
        "create",
        "piped",
        "--target",
        target,
        "--bot-token-stdin",
        stdin=NEW_BOT_TOKEN + "\n",
    )
    assert code == cli_bots.EXIT_OK, err
    created = servicer.of("CreateBot")
    assert [(r.name, r.token, r.rate_limit) for r in created] == [
        ("shop", NEW_BOT_TOKEN, 25.0),
        ("news", NEW_BOT_TOKEN, 0.0),
        ("piped", NEW_BOT_TOKEN, 0.0),
    ]


def test_bots_create_never_takes_the_token_on_the_command_line(
    recorder: tuple[Recorder, str],
) -> None:
    servicer, target = recorder
    code, _, err = run_cli(cli_bots.main, "create", "shop", "--target", target)
    assert code == cli_bots.EXIT_USAGE
    assert "set TGBROADCAST_BOT_TOKEN or pass --bot-token-stdin" in err
    # Pasted on the command line anyway: refused, and not echoed back.
    code, out, err = run_cli(cli_bots.main, "create", "shop", "--target", target, NEW_BOT_TOKEN)
    assert code == cli_bots.EXIT_USAGE
    assert "a bot token is never taken on the command line" in err
    assert NEW_BOT_TOKEN not in out + err
    code, _, err = run_cli(
        cli_bots.main, "create", "shop", "--target", target, "--bot-token-stdin", stdin="\n"
    )
    assert code == cli_bots.EXIT_USAGE
    assert "stdin holds no bot token" in err
    assert not servicer.of("CreateBot")


def test_bots_list_get_and_delete(recorder: tuple[Recorder, str]) -> None:
    servicer, target = recorder
    code, out, err = run_cli(cli_bots.main, "list", "--target", target)
    assert code == cli_bots.EXIT_OK, err
    assert out.splitlines() == [
        "NAME     BOT_ID     USERNAME   RATE  PAID RATE  SOURCE",
        "default  123456789  -          30/s  0/s        config",
        "shop     555000111  @shop_bot  30/s  0/s        -",
    ]
    code, out, err = run_cli(cli_bots.main, "list", "--target", target, "--json")
    assert [bot["name"] for bot in json.loads(out)] == ["default", "shop"]
    code, out, err = run_cli(cli_bots.main, "get", "shop", "--target", target)
    assert code == cli_bots.EXIT_OK, err
    assert "  username: shop_bot" in out.splitlines()
    code, out, err = run_cli(cli_bots.main, "delete", "shop", "--target", target)
    assert (code, out) == (cli_bots.EXIT_OK, "bot shop deleted\n")
    assert [r.name for r in servicer.of("DeleteBot")] == ["shop"]


def test_bots_commands_report_the_service_refusal(recorder: tuple[Recorder, str]) -> None:
    servicer, target = recorder
    servicer.abort = (grpc.StatusCode.FAILED_PRECONDITION, "bot shop has unfinished broadcasts: 7")
    code, out, err = run_cli(cli_bots.main, "delete", "shop", "--target", target)
    assert code == cli_bots.EXIT_ERROR
    assert err == (
        "tgbroadcast bots delete: FAILED_PRECONDITION: bot shop has unfinished broadcasts: 7\n"
    )
    assert not out
    code, out, err = run_cli(
        cli_bots.main,
        "create",
        "shop",
        "--target",
        target,
        environ={"TGBROADCAST_BOT_TOKEN": NEW_BOT_TOKEN},
    )
    assert code == cli_bots.EXIT_ERROR
    assert NEW_BOT_TOKEN not in out + err


async def test_tgbroadcast_bots_runs_the_client(recorder: tuple[Recorder, str]) -> None:
    """``tgbroadcast bots ...`` as a user's shell runs it: the client, no service settings."""
    _, target = recorder
    proc = await asyncio.create_subprocess_exec(
        str(TGBROADCAST),
        "bots",
        "get",
        "shop",
        "--target",
        target,
        "--token",
        API_TOKEN,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert "  name: shop" in out.decode().splitlines()


# The whole service with two configured bots.


@pytest.fixture
async def two_bots(backend: Backend, simulator: Simulator) -> AsyncIterator[Stack]:
    """The stack with ``default`` (the suite's token) and ``b`` (another token)."""
    bots = json.dumps([{"name": "b", "token": OTHER_BOT_TOKEN}])
    async with start_stack(backend, simulator, {"TGB_BOTS": bots}) as stack:
        yield stack


async def finished(client: BroadcastClient, broadcast_id: int) -> pb.Broadcast:
    async for _ in client.watch(broadcast_id):
        pass
    return await client.get(broadcast_id)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_sending_as_a_bot_uses_its_token_and_its_users(two_bots: Stack) -> None:
    stack = two_bots
    async with BroadcastClient(stack.grpc_target, API_TOKEN) as client:
        assert await client.upsert_users([pb.User(id=41, first_name="Bea")], bot="b") == 1
        assert (await client.get_user(41, bot="b")).first_name == "Bea"
        with pytest.raises(NotFound):
            await client.get_user(41)  # the default bot has no user 41
        as_b = await client.send("from b", all_users=True, bot="b")
        as_default = await client.send("from default", user_ids=[42])
        b_done = await finished(client, as_b.broadcast_id)
        default_done = await finished(client, as_default.broadcast_id)
        only_b = await client.list_broadcasts(bot="b")
        bots = await client.list_bots()
    assert (b_done.bot, b_done.sent, b_done.status) == ("b", 1, pb.BROADCAST_STATUS_COMPLETED)
    assert (default_done.bot, default_done.sent) == ("default", 1)
    assert [x.broadcast_id for x in only_b.broadcasts] == [as_b.broadcast_id]
    assert {(x.name, x.bot_id, x.source) for x in bots} == {
        ("default", BOT_ID, "config"),
        ("b", OTHER_BOT_ID, "config"),
    }
    sends = {
        (c.bot_id, c.chat_id, c.params["text"])
        for c in stack.simulator.calls
        if c.method == "sendMessage"
    }
    assert sends == {(OTHER_BOT_ID, 41, "from b"), (BOT_ID, 42, "from default")}


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_the_command_line_sends_as_a_bot_and_lists_the_bots(two_bots: Stack) -> None:
    stack = two_bots

    def command_line() -> tuple[tuple[int, str, str], tuple[int, str, str]]:
        base = ("--target", stack.grpc_target)
        sent = run_cli(send_cli.main, *base, "--bot", "b", "--message", "hi", "--user-id", "43")
        return sent, run_cli(cli_bots.main, "list", *base)

    (code, out, err), (listed, table, _) = await asyncio.to_thread(command_line)
    assert code == send_cli.EXIT_OK, err
    broadcast_id = int(out.split(":")[0].removeprefix("broadcast "))
    async with BroadcastClient(stack.grpc_target, API_TOKEN) as client:
        assert (await finished(client, broadcast_id)).bot == "b"
    assert listed == cli_bots.EXIT_OK
    assert sorted(line.split()[0] for line in table.splitlines()[1:]) == ["b", "default"]
    sends = [c for c in stack.simulator.calls if c.method == "sendMessage"]
    assert [(c.bot_id, c.chat_id) for c in sends] == [(OTHER_BOT_ID, 43)]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_tgbroadcast_bots_creates_a_bot_that_then_sends(
    backend: Backend, simulator: Simulator
) -> None:
    overrides = {"TGB_SERVER_SECRET_KEY": "a-secret-key-of-at-least-32-characters-0123"}
    async with start_stack(backend, simulator, overrides) as stack:
        base = ("--target", stack.grpc_target)

        def create_and_send() -> list[tuple[int, str, str]]:
            environ = {"TGBROADCAST_BOT_TOKEN": NEW_BOT_TOKEN}
            return [
                run_cli(cli_bots.main, "create", "shop", *base, "--json", environ=environ),
                run_cli(send_cli.main, *base, "--bot", "shop", "--message", "hi", "--user-id", "9"),
            ]

        (code, created, err), (sent_code, sent, sent_err) = await asyncio.to_thread(create_and_send)
        assert code == cli_bots.EXIT_OK, err
        shown = json.loads(created)
        assert (shown["name"], shown["bot_id"], shown["source"]) == ("shop", 555000111, "api")
        assert NEW_BOT_TOKEN.split(":")[1] not in created + err
        assert sent_code == send_cli.EXIT_OK, sent_err
        broadcast_id = int(sent.split(":")[0].removeprefix("broadcast "))
        async with BroadcastClient(stack.grpc_target, API_TOKEN) as client:
            done = await finished(client, broadcast_id)
        assert (done.bot, done.sent) == ("shop", 1)

        def delete_and_get() -> list[tuple[int, str, str]]:
            return [
                run_cli(cli_bots.main, "delete", "shop", *base),
                run_cli(cli_bots.main, "get", "shop", *base),
            ]

        (deleted, out, err), (got, _, missing) = await asyncio.to_thread(delete_and_get)
        assert (deleted, out) == (cli_bots.EXIT_OK, "bot shop deleted\n"), err
        assert got == cli_bots.EXIT_ERROR
        assert missing.startswith("tgbroadcast bots get: NOT_FOUND: ")
    sends = [c for c in simulator.calls if c.method == "sendMessage"]
    assert [(c.bot_id, c.chat_id) for c in sends] == [(555000111, 9)]
