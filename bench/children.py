"""The processes a benchmark runs: the simulator, the service's server and workers, peers.

Every one is a real child process with its own log file in the run's folder, so its CPU and
memory are its own (see :mod:`bench.meter`) and nothing shares the harness's event loop. Each
is an async context manager and is killed on exit if it is still running.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

BOT_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw_bench"  # noqa: S105 - fake
"""A well-formed fake token (bot id 123456789): the simulator accepts any such token."""
BOT_ID = 123456789


def bot_token(bot_id: int) -> str:
    """Another well-formed fake token, for the bot ``bot_id`` (scenarios with several bots)."""
    return f"{bot_id}:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw_bench"


API_TOKEN = "bench-api-token-0123456789"  # noqa: S105 - the bench's own

REPO = Path(__file__).resolve().parents[1]
"""The repository: on ``PYTHONPATH`` of every child, so ``python -m bench.peers`` is found."""

START_TIMEOUT = 120.0
"""Seconds a child may take to be ready (a worker imports aiogram: seconds of CPU)."""


class ChildFailed(RuntimeError):
    """A child process exited or did not become ready; the message ends with its log."""


@dataclass
class Child:
    """A running child process; ``log`` holds its stderr (and stdout unless piped), from
    ``offset`` on (a log of the same name in a reused folder is appended to)."""

    name: str
    proc: asyncio.subprocess.Process
    log: Path
    offset: int = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    def log_text(self) -> str:
        """What this process wrote (not an earlier one of the same name)."""
        with self.log.open("rb") as log:
            log.seek(self.offset)
            return log.read().decode("utf-8", errors="replace")

    def failure(self, what: str) -> ChildFailed:
        tail = "\n".join(self.log_text().splitlines()[-30:])
        return ChildFailed(f"{self.name} {what}; the end of {self.log}:\n{tail}")

    async def stop(self, within: float = 30.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited ``within`` seconds."""
        if not self.running:
            return
        self.proc.terminate()
        try:
            async with asyncio.timeout(within):
                await self.proc.wait()
        except TimeoutError:
            await self.kill()

    async def kill(self) -> None:
        """``kill -9``: no shutdown at all."""
        if self.running:
            self.proc.kill()
        await self.proc.wait()


@asynccontextmanager
async def spawn(
    args: Sequence[str],
    *,
    name: str,
    folder: Path,
    environ: Mapping[str, str] | None = None,
    pipe_stdout: bool = False,
    pipe_stdin: bool = False,
) -> AsyncIterator[Child]:
    """``args`` as a child process in ``folder``; stopped (then killed) on exit."""
    folder.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - a local folder, at once
    log = folder / f"{name}.log"
    with log.open("ab") as sink:
        offset = sink.tell()
        proc = await asyncio.create_subprocess_exec(
            *args,
            cwd=folder,
            env={**os.environ, "PYTHONPATH": _python_path(), **(environ or {})},
            stdin=asyncio.subprocess.PIPE if pipe_stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if pipe_stdout else sink,
            stderr=sink,
        )
    child = Child(name=name, proc=proc, log=log, offset=offset)
    try:
        yield child
    finally:
        await child.stop(within=10.0)


def _python_path() -> str:
    current = os.environ.get("PYTHONPATH", "")
    return f"{REPO}{os.pathsep}{current}" if current else str(REPO)


async def read_line(child: Child, within: float = START_TIMEOUT) -> str:
    """The next line ``child`` prints on its piped stdout."""
    assert child.proc.stdout is not None
    try:
        async with asyncio.timeout(within):
            line = await child.proc.stdout.readline()
    except TimeoutError:
        raise child.failure(f"printed nothing for {within:.0f} s") from None
    if not line:
        await child.proc.wait()
        raise child.failure(f"exited with {child.proc.returncode}")
    return line.decode().strip()


@dataclass(frozen=True, slots=True, kw_only=True)
class SimCall:
    """One Bot API call the simulator answered: what a benchmark needs of it."""

    seq: int
    at: float
    """Wall-clock second at which the simulator decided the answer."""
    method: str
    chat_id: int
    error_code: int | None
    paid: bool
    bot_id: int = 0
    """The sending bot's id (its token's leading digits)."""


class SimulatorProcess:
    """``python -m tgbroadcast.simulator`` in its own process, driven through its ``/_sim`` control
    API."""

    def __init__(self, child: Child, url: str, session: aiohttp.ClientSession) -> None:
        self.child = child
        self.url = url
        self._session = session

    @classmethod
    @asynccontextmanager
    async def start(cls, folder: Path) -> AsyncIterator[SimulatorProcess]:
        args = [
            sys.executable,
            "-m",
            "tgbroadcast.simulator",
            "--port",
            "0",
            "--rate-limits",
            "off",
        ]
        async with (
            spawn(args, name="simulator", folder=folder, pipe_stdout=True) as child,
            aiohttp.ClientSession() as session,
        ):
            line = await read_line(child, within=60.0)
            url = line.rsplit(" ", 1)[-1]
            if not url.startswith("http://"):
                raise child.failure(f"printed {line!r}, not its URL")
            yield cls(child, url, session)

    async def reset(self) -> None:
        """Forget every call, message and flood-control window."""
        async with self._session.post(f"{self.url}/_sim/reset") as response:
            response.raise_for_status()

    async def set_limits(self, *, bot: float | None = None, paid_bot: float | None = None) -> None:
        """Flood control per bot: ``bot`` (and ``paid_bot``) messages in any one-second window;
        ``None`` turns a limit off. Chats are not limited (every recipient gets one message)."""
        body = {
            "bot": None if bot is None else [bot, 1.0],
            "paid_bot": None if paid_bot is None else [paid_bot, 1.0],
        }
        async with self._session.put(f"{self.url}/_sim/rate_limits", json=body) as response:
            response.raise_for_status()

    async def calls(self, *, since: int = 0, method: str = "sendMessage") -> list[SimCall]:
        """The ``method`` calls answered after ``seq`` ``since``, in order."""
        query = {"method": method, "since": str(since)}
        async with self._session.get(f"{self.url}/_sim/calls", params=query) as response:
            response.raise_for_status()
            data: dict[str, Any] = await response.json()
        return [_sim_call(call) for call in data["calls"]]


def _sim_call(data: Mapping[str, Any]) -> SimCall:
    params = data.get("params") or {}
    chat = params.get("chat_id", 0)
    paid = params.get("allow_paid_broadcast")
    return SimCall(
        seq=int(data["seq"]),
        at=float(data["at"]),
        method=str(data["method"]),
        chat_id=int(chat) if str(chat).lstrip("-").isdigit() else 0,
        error_code=data.get("error_code"),
        paid=paid is True or str(paid).lower() == "true",
        bot_id=int(data.get("bot_id") or 0),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceConfig:
    """How one run's service is configured (``TGB_*``); the rest are the defaults of
    ``config/config.yaml``."""

    rate_limit: float = 30.0
    paid_rate_limit: float = 1000.0
    concurrency: int = 32
    ack_wait: float = 30.0
    database_dsn: str = ""
    """Empty: SQLite in the run's data folder."""
    environ: Mapping[str, str] = field(default_factory=dict)
    """More ``TGB_*`` settings (``TGB_SERVER_TLS_CERT_FILE``: the API serves HTTPS)."""


class Cluster:
    """One service: ``tgbroadcast server`` (with its embedded nats-server) and workers.

    Every cluster has its own data folder (SQLite file, NATS store), ports and NATS prefix.
    """

    def __init__(
        self, stack: AsyncExitStack, folder: Path, sim: SimulatorProcess, config: ServiceConfig
    ) -> None:
        self._stack = stack
        self.folder = folder
        self.config = config
        # Bound by the server (any free port) and read from its log: a port picked here and
        # bound later could be taken in between by another process.
        self.http_port = 0
        self.grpc_port = 0
        self.environ = {
            "TGB_DATA_DIR": str(folder / "data"),
            "TGB_DATABASE_DSN": config.database_dsn,
            "TGB_NATS_URL": "",
            "TGB_NATS_PREFIX": "bench",
            "TGB_NATS_ACK_WAIT": f"{config.ack_wait:g}",
            "TGB_TELEGRAM_TOKEN": BOT_TOKEN,
            "TGB_TELEGRAM_API_URL": sim.url,
            "TGB_TELEGRAM_RATE_LIMIT": f"{config.rate_limit:g}",
            "TGB_TELEGRAM_PAID_RATE_LIMIT": f"{config.paid_rate_limit:g}",
            "TGB_WORKER_CONCURRENCY": str(config.concurrency),
            "TGB_SERVER_API_TOKEN": API_TOKEN,
            "TGB_SERVER_HOST": "127.0.0.1",
            "TGB_SERVER_PORT": str(self.http_port),
            "TGB_SERVER_GRPC_PORT": str(self.grpc_port),
            # The benchmarks measure the service, not its per-token request limit.
            "TGB_SERVER_REQUESTS_PER_SECOND": "0",
            "TGB_LOG_LEVEL": "INFO",
            **config.environ,
        }
        self.server: Child | None = None
        self.workers: list[Child] = []
        self._started = 0

    @classmethod
    @asynccontextmanager
    async def start(
        cls, folder: Path, sim: SimulatorProcess, config: ServiceConfig, *, workers: int = 0
    ) -> AsyncIterator[Cluster]:
        """A running server and ``workers`` workers; every process stopped on exit."""
        async with AsyncExitStack() as stack:
            cluster = cls(stack, folder, sim, config)
            await cluster.start_server()
            await cluster.add_workers(workers)
            yield cluster

    @property
    def http_url(self) -> str:
        scheme = "https" if self.environ.get("TGB_SERVER_TLS_CERT_FILE") else "http"
        return f"{scheme}://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    async def start_server(self) -> Child:
        """The server, on the ports of its first start (those it then bound)."""
        child = await self._spawn("server")
        if not self.http_port:
            await _wait_logged(child, "API listening")
            self.http_port, self.grpc_port = _listening_ports(child.log_text())
            self.environ["TGB_SERVER_PORT"] = str(self.http_port)
            self.environ["TGB_SERVER_GRPC_PORT"] = str(self.grpc_port)
        await _wait_healthy(child, self.http_url)
        self.server = child
        return child

    async def add_workers(self, count: int) -> list[Child]:
        """``count`` more workers, started side by side; returns once each is consuming."""
        started = await asyncio.gather(*(self.start_worker() for _ in range(count)))
        return list(started)

    async def start_worker(self) -> Child:
        child = await self._spawn("worker")
        await _wait_logged(child, "worker started")
        self.workers.append(child)
        return child

    @property
    def live_workers(self) -> list[Child]:
        return [worker for worker in self.workers if worker.running]

    async def _spawn(self, role: str) -> Child:
        self._started += 1
        args = [sys.executable, "-m", "tgbroadcast.launcher", role]
        name = f"{role}-{self._started}"
        return await self._stack.enter_async_context(
            spawn(args, name=name, folder=self.folder, environ=self.environ)
        )


def _listening_ports(log: str) -> tuple[int, int]:
    """The HTTP and gRPC ports of the server's ``API listening`` line."""
    line = next(line for line in log.splitlines() if "API listening" in line)
    http = re.search(r"http_port=(\d+)", line)
    grpc = re.search(r"grpc_port=(\d+)", line)
    if http is None or grpc is None:
        raise ChildFailed(f"no ports in the server's line {line!r}")
    return int(http.group(1)), int(grpc.group(1))


async def _wait_healthy(child: Child, http_url: str) -> None:
    async with aiohttp.ClientSession() as session, asyncio.timeout(START_TIMEOUT):
        while True:
            if not child.running:
                raise child.failure(f"exited with {child.proc.returncode}")
            try:
                # ssl=False: a TLS server's certificate is not checked to see it ready.
                async with session.get(http_url + "/readyz", ssl=False) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)


async def _wait_logged(child: Child, text: str) -> None:
    try:
        async with asyncio.timeout(START_TIMEOUT):
            while text not in child.log_text():
                if not child.running:
                    raise child.failure(f"exited with {child.proc.returncode}")
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise child.failure(f"did not log {text!r} within {START_TIMEOUT:.0f} s") from None


class PeerProcess:
    """``python -m bench.peers LIBRARY``: what a bot developer would write instead.

    The peer imports its library and opens its bot first, prints ``ready``, then serves one
    run per command, so start-up costs stay outside the measured runs.
    """

    def __init__(self, child: Child) -> None:
        self.child = child

    @classmethod
    @asynccontextmanager
    async def start(
        cls, folder: Path, name: str, sim: SimulatorProcess, library: str
    ) -> AsyncIterator[PeerProcess]:
        args = [sys.executable, "-m", "bench.peers", library, "--api-url", sim.url]
        args += ["--token", BOT_TOKEN]
        async with spawn(
            args, name=name, folder=folder, pipe_stdout=True, pipe_stdin=True
        ) as child:
            peer = cls(child)
            line = await read_line(child)
            if line != "ready":
                raise child.failure(f"printed {line!r} instead of 'ready'")
            yield peer

    async def go(self, command: Mapping[str, Any]) -> None:
        """Start one run (``{"kind", "rate", "first", "count", "paid"}``)."""
        assert self.child.proc.stdin is not None
        self.child.proc.stdin.write(json.dumps(command).encode() + b"\n")
        await self.child.proc.stdin.drain()

    async def result(self, within: float) -> dict[str, Any]:
        """The run's closing JSON line (when it started sending, what it counted)."""
        line = await read_line(self.child, within=within)
        data: dict[str, Any] = json.loads(line)
        return data


class PeerPool:
    """One running peer process per library, started on first use, kept for every run."""

    def __init__(self, stack: AsyncExitStack, folder: Path, sim: SimulatorProcess) -> None:
        self._stack = stack
        self._folder = folder
        self._sim = sim
        self._running: dict[str, PeerProcess] = {}

    async def get(self, library: str) -> PeerProcess:
        peer = self._running.get(library)
        if peer is None or not peer.child.running:
            peer = await self._stack.enter_async_context(
                PeerProcess.start(self._folder, f"peer-{library}", self._sim, library)
            )
            self._running[library] = peer
        return peer
