"""The real entry points as separate processes: `tgbroadcast run`, `server` + `worker`,
`migrate`.

Also checks the documented aiohttp client example works as written, and that no token ever
reaches the logs (at DEBUG, with aiohttp and aiogram logging their URLs).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from collections.abc import Mapping
from pathlib import Path

import aiohttp
import grpc

from tests.fixtures.docs import ROOT, aimed_at, doc_example, run_script
from tests.fixtures.environ import API_TOKEN, local_storage, service_environ
from tests.fixtures.nats import wait_until
from tests.fixtures.processes import TGBROADCAST, spawn, wait_healthy
from tests.fixtures.services import free_port
from tests.fixtures.telegram import BOT_SECRET
from tgbroadcast.simulator import Simulator
from tgbroadcast.v1 import broadcast_pb2 as pb
from tgbroadcast.v1 import broadcast_pb2_grpc as pb_grpc


def local_environ(tmp_path: Path, simulator: Simulator) -> dict[str, str]:
    """The service on SQLite and an embedded nats-server under ``tmp_path / "data"``."""
    return service_environ(simulator, local_storage(tmp_path / "data"))


async def broadcast_and_watch(
    environ: Mapping[str, str], user_ids: list[int]
) -> list[pb.WatchBroadcastResponse]:
    http_url = f"http://127.0.0.1:{environ['TGB_SERVER_PORT']}"
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            http_url + "/send-message",
            json={"message": "from a process", "user_ids": user_ids},
            headers={"Authorization": f"Bearer {API_TOKEN}"},
        ) as response,
    ):
        assert response.status == 202
        broadcast_id = (await response.json())["broadcast_id"]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{environ['TGB_SERVER_GRPC_PORT']}") as channel:
        stub = pb_grpc.BroadcastServiceStub(channel)
        call = stub.WatchBroadcast(
            pb.WatchBroadcastRequest(broadcast_id=broadcast_id),
            metadata=(("authorization", f"Bearer {API_TOKEN}"),),
        )
        return [message async for message in call]


def assert_no_secrets(text: str) -> None:
    assert BOT_SECRET not in text
    assert API_TOKEN not in text


async def run_client_example(environ: Mapping[str, str], tmp_path: Path) -> None:
    """The documented aiohttp example as a user copies it, pointed at this service."""
    http_url = f"http://127.0.0.1:{environ['TGB_SERVER_PORT']}"
    code = aimed_at(doc_example("client-example"), token=API_TOKEN, http_url=http_url)
    run = await run_script(code, tmp_path / "client.py")
    assert run.returncode == 0, run.stderr
    assert "'status': 'queued'" in run.stdout
    assert "'total': 2" in run.stdout


async def test_run_all_in_one_and_shut_down_on_sigterm(
    tmp_path: Path, simulator: Simulator
) -> None:
    """`tgbroadcast run` at DEBUG: a broadcast, the documented client example, a clean
    SIGTERM, and not one token in the log."""
    environ = local_environ(tmp_path, simulator)
    args = [str(TGBROADCAST), "--log-level", "DEBUG", "run"]
    async with spawn(args, environ, tmp_path, "run") as process:
        await wait_healthy(process, f"http://127.0.0.1:{environ['TGB_SERVER_PORT']}")
        messages = await broadcast_and_watch(environ, [1, 2, 3])
        assert {m.result.user_id for m in messages[:-1]} == {1, 2, 3}
        assert messages[-1].progress.status == pb.BROADCAST_STATUS_COMPLETED
        await run_client_example(environ, tmp_path)
        process.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.proc.wait(), 30) == 0
    log = process.log()
    assert "broadcast finished" in log
    assert_no_secrets(log)
    # The embedded nats-server was stopped and its URL file removed.
    assert not (tmp_path / "data" / "nats" / "url").exists()


async def test_separate_server_and_worker_processes(tmp_path: Path, simulator: Simulator) -> None:
    environ = local_environ(tmp_path, simulator)
    python = sys.executable
    async with spawn(
        [python, "-m", "tgbroadcast.launcher", "server"], environ, tmp_path, "server"
    ) as server:
        await wait_healthy(server, f"http://127.0.0.1:{environ['TGB_SERVER_PORT']}")
        # Mistakes beside it end with one line naming them, not a traceback: a worker whose
        # metrics port is taken, a second server on the same data_dir (its NATS store).
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            busy = {**environ, "TGB_WORKER_METRICS_PORT": str(taken.getsockname()[1])}
            worker_args = [python, "-m", "tgbroadcast.launcher", "worker"]
            async with spawn(worker_args, busy, tmp_path, "busy") as refused:
                assert await refused.proc.wait() == 2, refused.log()
        assert "worker.metrics_port: cannot listen on" in refused.log()
        second = {**environ, "TGB_SERVER_PORT": str(free_port())}
        second["TGB_SERVER_GRPC_PORT"] = str(free_port())
        server_args = [python, "-m", "tgbroadcast.launcher", "server"]
        async with spawn(server_args, second, tmp_path, "second") as twin:
            assert await twin.proc.wait() == 1, twin.log()
        assert "the embedded nats-server cannot start" in twin.log()
        assert "is in use by another embedded nats-server" in twin.log()
        for log in (refused.log(), twin.log()):
            assert "Traceback" not in log, log
        metrics_port = free_port()
        worker_environ = {**environ, "TGB_WORKER_METRICS_PORT": str(metrics_port)}
        async with spawn(
            [python, "-m", "tgbroadcast.launcher", "worker"], worker_environ, tmp_path, "worker"
        ) as worker:
            messages = await broadcast_and_watch(environ, [5, 6])
            assert {m.result.user_id for m in messages[:-1]} == {5, 6}
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{metrics_port}/metrics") as response,
            ):
                sent = 'tgb_messages_total{bot="default",outcome="sent"} 2.0'
                assert sent in await response.text()
            worker.proc.send_signal(signal.SIGINT)
            assert await asyncio.wait_for(worker.proc.wait(), 30) == 0
        server.proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(server.proc.wait(), 30) == 0
    assert_no_secrets(server.log() + worker.log())


async def test_migrate_and_config_errors(tmp_path: Path) -> None:
    environ = {"TGB_DATA_DIR": str(tmp_path / "data")}
    async with spawn([str(TGBROADCAST), "migrate"], environ, tmp_path, "migrate") as process:
        assert await process.proc.wait() == 0
    assert (tmp_path / "data" / "tgbroadcast.db").exists()

    bad = {**environ, "TGB_SERVER_PORT": "eighty"}
    async with spawn([str(TGBROADCAST), "run"], bad, tmp_path, "bad") as process:
        assert await process.proc.wait() == 2
    assert "config server.port: must be a whole number, not 'eighty'" in process.log()

    missing = {**environ, "TGB_SERVER_API_TOKEN": API_TOKEN}
    async with spawn([str(TGBROADCAST), "run"], missing, tmp_path, "missing") as process:
        assert await process.proc.wait() == 2
    assert "config telegram.token: is required" in process.log()


def test_clients_example_is_the_documented_example() -> None:
    shipped = (ROOT / "clients" / "python" / "send_message.py").read_text(encoding="utf-8")
    assert shipped.endswith(doc_example("client-example"))


async def test_a_signal_during_start_up_stops_it_cleanly(
    tmp_path: Path, simulator: Simulator
) -> None:
    """A server waiting for a NATS that is not there yet (it retries every second) stops on
    SIGTERM at once, exit 0 — not after ``server.shutdown_grace``, exit 1."""
    environ = {
        **local_environ(tmp_path, simulator),
        "TGB_NATS_URL": f"nats://127.0.0.1:{free_port()}",  # nobody listens there
        "TGB_SERVER_SHUTDOWN_GRACE": "600",
    }
    async with spawn([str(TGBROADCAST), "server"], environ, tmp_path, "server") as process:

        async def waiting_for_nats() -> bool:
            return "ConnectionRefusedError" in process.log()

        await wait_until(waiting_for_nats)
        process.proc.send_signal(signal.SIGTERM)
        assert await process.proc.wait() == 0, process.log()
    log = process.log()
    assert "stopped during start-up" in log
    assert "overran" not in log


async def test_a_port_in_use_is_a_configuration_error_naming_it(
    tmp_path: Path, simulator: Simulator
) -> None:
    """Exit 2 and the key (``server.port``, ``server.grpc_port``), not a traceback and 1."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    with taken:
        port = str(taken.getsockname()[1])
        for key, variable in (
            ("server.grpc_port", "TGB_SERVER_GRPC_PORT"),
            ("server.port", "TGB_SERVER_PORT"),
        ):
            environ = {**local_environ(tmp_path, simulator), variable: port}
            async with spawn([str(TGBROADCAST), "server"], environ, tmp_path, key) as process:
                assert await process.proc.wait() == 2, process.log()
            log = process.log()
            assert "configuration error" in log, log
            assert f"{key}: cannot listen" in log, log
            assert "Traceback" not in log


async def test_a_data_dir_that_cannot_be_made_is_a_configuration_error(
    tmp_path: Path, simulator: Simulator
) -> None:
    (tmp_path / "a-file").write_text("")
    environ = {**local_environ(tmp_path, simulator), "TGB_DATA_DIR": str(tmp_path / "a-file" / "d")}
    async with spawn([str(TGBROADCAST), "run"], environ, tmp_path, "run") as process:
        assert await process.proc.wait() == 2, process.log()
    assert "config data_dir:" in process.log()
    assert "Traceback" not in process.log()
