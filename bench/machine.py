"""The machine, versions and date a benchmark ran with: stated on every table and chart."""

from __future__ import annotations

import os
import platform
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from bench.children import REPO

PACKAGES = (
    "aiogram",
    "python-telegram-bot",
    "aiohttp",
    "grpcio",
    "nats-py",
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
    "psutil",
    "matplotlib",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Machine:
    date: str
    cpu: str
    cores: int
    memory_gb: float
    system: str
    python: str
    commit: str
    nats_server: str
    sqlite: str
    versions: dict[str, str] = field(default_factory=dict)
    postgres: str = ""
    load: str = ""

    def short(self) -> str:
        """One line for a chart's footer."""
        return (
            f"{self.date} · {self.cores} cores {self.cpu} · {self.memory_gb:.0f} GB · "
            f"Python {self.python} · aiogram {self.versions.get('aiogram', '?')} · "
            f"commit {self.commit}"
        )

    def markdown_lines(self) -> list[str]:
        versions = ", ".join(f"{name} {version}" for name, version in self.versions.items())
        return [
            f"- Date: {self.date}",
            f"- Machine: {self.cores} cores ({self.cpu}), {self.memory_gb:.0f} GB memory, "
            f"{self.system}; load average at the start {self.load}",
            f"- Service: commit `{self.commit}`; Python {self.python}",
            f"- nats-server {self.nats_server}; SQLite {self.sqlite}"
            + (f"; PostgreSQL {self.postgres}" if self.postgres else ""),
            f"- Libraries: {versions}",
        ]


def describe(*, postgres: str = "") -> Machine:
    """What is true of this machine now."""
    return Machine(
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        cpu=_cpu_model(),
        cores=os.cpu_count() or 0,
        memory_gb=_memory_gb(),
        system=f"{platform.system()} {platform.release()}",
        python=platform.python_version(),
        commit=_commit(),
        nats_server=_nats_server_version(),
        sqlite=sqlite3.sqlite_version,
        versions={name: _version(name) for name in PACKAGES if _version(name)},
        postgres=postgres,
        load=" ".join(f"{x:.2f}" for x in os.getloadavg()),
    )


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return ""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory_gb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0


def _run(args: list[str]) -> str:
    try:
        done = subprocess.run(  # noqa: S603 - fixed arguments, no shell
            args, cwd=REPO, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip()


def _commit() -> str:
    git = shutil.which("git")
    if git is None:
        return "unknown"
    commit = _run([git, "rev-parse", "--short", "HEAD"]) or "unknown"
    dirty = _run([git, "status", "--porcelain", "--untracked-files=no"])
    return f"{commit} + uncommitted changes" if dirty else commit


def _nats_server_version() -> str:
    binary = Path(sys.executable).parent / "nats-server"
    found = str(binary) if binary.exists() else shutil.which("nats-server")
    if found is None:
        return "unknown"
    return _run([found, "--version"]).removeprefix("nats-server: ") or "unknown"
