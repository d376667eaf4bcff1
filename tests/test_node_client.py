"""The Node.js example (``clients/node/send.js``) against the whole service, as a user runs it.

It needs Node.js and npm: without them the test skips locally and fails with ``CI=true``.
``npm ci`` runs only when ``clients/node/node_modules`` is missing or older than the lock file,
so a second run costs a node start or two.
"""

from __future__ import annotations

import asyncio
import fcntl
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.environ import user_environ
from tests.fixtures.services import IN_CI
from tests.fixtures.stack import API_TOKEN, Backend, Stack, on_sqlite, start_stack
from tests.fixtures.tls import Pki
from tests.fixtures.watching import assert_watch_complete, watch
from tgbroadcast.simulator import ChatState, Simulator
from tgbroadcast.v1 import broadcast_pb2 as pb

# The client only speaks gRPC: one backend is enough.
pytestmark = on_sqlite

NODE_CLIENT = Path(__file__).resolve().parents[1] / "clients" / "node"

RESULT_LINE = re.compile(r"^(-?\d+) ([A-Z_]+) (message_id=(\d+)|error=(\".*\")) \(")


def require_tool(name: str) -> str:
    found = shutil.which(name)
    if found is not None:
        return found
    message = f"{name} is not on PATH: the Node.js client example needs Node.js 18+ and npm"
    if IN_CI:
        pytest.fail(f"{message}; CI=true requires it")
    pytest.skip(message)


@pytest.fixture(scope="session")
def node() -> str:
    """The ``node`` executable, with the example's dependencies installed from its lock file."""
    node = require_tool("node")
    npm = require_tool("npm")
    lock = NODE_CLIENT / "package-lock.json"
    installed = NODE_CLIENT / "node_modules" / ".package-lock.json"
    # Every pytest-xdist worker has this session fixture: one at a time installs (two
    # ``npm ci`` at once remove each other's files), the others then find it installed.
    with (NODE_CLIENT / ".npm-ci.lock").open("w") as turn:
        fcntl.flock(turn, fcntl.LOCK_EX)
        if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
            subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=NODE_CLIENT,
                check=True,
                timeout=100,
                stdout=subprocess.DEVNULL,
            )
    return node


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: list[str]
    stderr: str


async def run_example(
    node: str, stack: Stack, token: str, *args: str, environ: dict[str, str] | None = None
) -> Run:
    environ = user_environ(
        TGB_GRPC_TARGET=stack.grpc_target, TGB_API_TOKEN=token, **(environ or {})
    )
    proc = await asyncio.create_subprocess_exec(
        node,
        str(NODE_CLIENT / "send.js"),
        *args,
        cwd=NODE_CLIENT,
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        stdout, stderr = await proc.communicate()
    assert proc.returncode is not None
    return Run(
        returncode=proc.returncode,
        stdout=stdout.decode().splitlines(),
        stderr=stderr.decode(),
    )


async def test_node_example_sends_and_prints_every_result(node: str, stack: Stack) -> None:
    blocked = 31
    # Past 2**53 a JavaScript number loses digits: the id must come back exact.
    huge = 2**53 + 1
    supergroup = -1001234567890
    recipients = {11, 12, huge, supergroup, blocked}
    stack.simulator.chats.declare(blocked, ChatState.BLOCKED)

    run = await run_example(
        node, stack, API_TOKEN, "--message", "Hello from Node.js!", *map(str, sorted(recipients))
    )
    assert run.returncode == 0, run.stderr
    first, *results, last = run.stdout

    queued = re.fullmatch(r"broadcast (\d+): QUEUED, 5 recipients", first)
    assert queued, run.stdout
    broadcast_id = int(queued.group(1))

    # What the script printed is exactly what the API reports.
    expected = assert_watch_complete(await watch(stack, broadcast_id), recipients)
    printed: dict[int, tuple[str, str]] = {}
    for line in results:
        match = RESULT_LINE.match(line)
        assert match, line
        user_id = int(match.group(1))
        assert user_id not in printed, f"{user_id} printed twice"
        printed[user_id] = (match.group(2), match.group(4) or match.group(5))
    assert set(printed) == recipients
    for user_id, result in expected.items():
        outcome, detail = printed[user_id]
        assert outcome == pb.DeliveryOutcome.Name(result.outcome).removeprefix("DELIVERY_OUTCOME_")
        if result.outcome == pb.DELIVERY_OUTCOME_SENT:
            assert int(detail) == result.message_id > 0
        else:
            assert detail == f'"{result.error}"'
    assert printed[blocked][0] == "BLOCKED"
    assert last == f"broadcast {broadcast_id} COMPLETED: total=5 sent=4 failed=1"

    # Telegram was asked once per recipient, with the text given on the command line.
    calls = [call for call in stack.simulator.calls if call.method == "sendMessage"]
    assert sorted(int(call.params["chat_id"]) for call in calls) == sorted(recipients)
    assert {call.params["text"] for call in calls} == {"Hello from Node.js!"}
    assert {int(call.params["chat_id"]) for call in calls if call.ok} == recipients - {blocked}


async def test_node_example_reports_a_wrong_token(node: str, stack: Stack) -> None:
    run = await run_example(node, stack, "not-the-api-token-at-all", "11")
    assert run.returncode == 1
    assert run.stdout == []
    assert "UNAUTHENTICATED" in run.stderr
    assert not stack.simulator.calls


async def test_node_example_speaks_mutual_tls(
    node: str, backend: Backend, simulator: Simulator, pki: Pki
) -> None:
    async with start_stack(backend, simulator, pki.tls_overrides(mutual=True)) as stack:
        files = {
            "TGB_GRPC_CA_FILE": str(pki.ca_file),
            "TGB_GRPC_CERT_FILE": str(pki.client.cert_file),
            "TGB_GRPC_KEY_FILE": str(pki.client.key_file),
        }
        run = await run_example(node, stack, API_TOKEN, "41", environ=files)
        assert run.returncode == 0, run.stderr
        assert re.fullmatch(r"broadcast \d+ COMPLETED: total=1 sent=1 failed=0", run.stdout[-1])

        # Without a client certificate the server refuses the connection.
        run = await run_example(
            node, stack, API_TOKEN, "42", environ={"TGB_GRPC_CA_FILE": str(pki.ca_file)}
        )
        assert run.returncode == 1
        assert "UNAVAILABLE" in run.stderr
        # A certificate without its key is a usage error.
        run = await run_example(
            node, stack, API_TOKEN, "43", environ={"TGB_GRPC_CERT_FILE": str(pki.client.cert_file)}
        )
        assert run.returncode == 2
        assert "TGB_GRPC_KEY_FILE" in run.stderr
