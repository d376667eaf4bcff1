"""``tgbroadcast send``, the Python client's command line, as a user runs it: a child
process against the whole service, with ``--watch``; and its usage errors."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
from pathlib import Path

import pytest

from tests.fixtures.clients import WRONG_TOKEN, client_for
from tests.fixtures.environ import user_environ
from tests.fixtures.processes import TGBROADCAST, run_send
from tests.fixtures.stack import API_TOKEN, SECOND_API_TOKEN, Stack, on_sqlite
from tests.fixtures.telegram import BOT_ID
from tgbroadcast.simulator import ChatState, ChatType
from tgbroadcast_client import cli as send_cli
from tgbroadcast_client import (
    message_request,
)


@on_sqlite
async def test_cli_sends_watches_and_summarises(stack: Stack) -> None:
    blocked = 33
    stack.simulator.chats.declare(blocked, ChatState.BLOCKED)
    run = await run_send(
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
        env=user_environ(TGBROADCAST_TOKEN=API_TOKEN),
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
    run = await run_send(
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
    run = await run_send(
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
    no_token = await run_send("--user-id", "1", environ={})
    assert no_token.returncode == send_cli.EXIT_USAGE
    assert "no API token" in no_token.stderr
    no_audience = await run_send("--message", "hi", environ={"TGBROADCAST_TOKEN": "x"})
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
        run = await run_send(
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
    run = await run_send(
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
    run = await run_send(
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


def usage_error(*args: str) -> tuple[int, str, str]:
    """``tgbroadcast send ARGS`` in this process (what the executable runs; the process itself
    is tested by ``test_cli_needs_a_token_and_an_audience``): exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err):  # argparse writes its errors there
        code = send_cli.main(
            [*args, "--user-id", "1"], environ={"TGBROADCAST_TOKEN": "x"}, stdout=out, stderr=err
        )
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(("args", "message"), CLI_USAGE_ERRORS)
def test_cli_refuses_a_kind_without_what_it_needs(args: list[str], message: str) -> None:
    # No service: a usage error is found before any connection.
    code, stdout, stderr = usage_error("--target", "127.0.0.1:9", *args)
    assert code == send_cli.EXIT_USAGE, stderr
    assert message in stderr
    assert stdout == ""


def test_cli_refuses_a_bad_album_file(tmp_path: Path) -> None:
    bad = {
        "not json": ("[", "not JSON"),
        "not a list": ('{"media_type": "photo"}', "must be a JSON array"),
        "unknown field": ('[{"media_type": "photo", "url": "x"}]', "item [0]: unknown field 'url'"),
        "no url": ('[{"media_type": "photo"}]', "item [0]: needs media_type and media_url"),
    }
    for name, (text, message) in bad.items():
        path = tmp_path / f"{name}.json"
        path.write_text(text)
        code, _, stderr = usage_error("--album-file", str(path))
        assert code == send_cli.EXIT_USAGE, (name, stderr)
        assert message in stderr, name
