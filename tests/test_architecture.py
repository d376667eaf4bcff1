"""The tree keeps its shape: imports run one way, every package says what lives in it, and no
module or test file outgrows a reader.

Layers are named by installed package (``tgbroadcast.core.store`` is ``core.store``); a new
subpackage or top-level module of ``core`` must be added to :data:`MAY_IMPORT` on purpose.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("core", "server", "worker", "simulator", "launcher")
MAX_LINES = 600

_CORE_BASE = frozenset({"core.domain"})
# What each layer may import besides itself. Everything in a layer may import its own modules.
MAY_IMPORT: dict[str, frozenset[str]] = {
    "core": frozenset(),  # the package docstring only
    "core.domain": frozenset(),
    "core.logs": frozenset(),
    "core.metrics": frozenset(),
    "core.tasks": frozenset(),
    "core.outbound": frozenset({"core.rules"}),
    "core.tracing": _CORE_BASE,
    "core.health": _CORE_BASE | {"core.tasks"},
    "core.config": _CORE_BASE,
    "core.rules": _CORE_BASE,
    "core.store": _CORE_BASE | {"core.tasks"},
    "core.queue": _CORE_BASE | {"core.tracing", "core.logs"},
    "core.service": _CORE_BASE
    | {"core.rules", "core.store", "core.queue", "core.metrics", "core.tasks", "core.tracing"},
    "core.background": _CORE_BASE
    | {"core.rules", "core.store", "core.queue", "core.service", "core.config", "core.tasks"}
    | {"core.outbound"},
    "core.bots": _CORE_BASE | {"core.config", "core.store", "core.logs"},
    "server": frozenset(),  # the package docstring only
    "server.auth": _CORE_BASE,
    "server.scopes": _CORE_BASE | {"server.auth"},
    "server.streams": _CORE_BASE | {"core.tasks"},
    "server.guards": frozenset({"server.auth"}),
    "server.tls": _CORE_BASE,
    "server.token_view": _CORE_BASE | {"core.bots", "server.auth"},
    # The two transports never import each other: each has its own converters.
    "server.grpc": _CORE_BASE
    | {"core.rules", "core.service", "server.auth", "server.guards", "v1"}
    | {"core.health", "core.tasks", "core.tracing", "server.streams", "server.scopes"}
    | {"core.bots", "server.token_view"},
    "server.rest": _CORE_BASE
    | {"core.rules", "core.service", "core.tasks", "server.auth", "server.guards", "v1"}
    | {"core.health", "core.tracing", "server.streams", "server.scopes", "core.bots"}
    | {"server.ui", "server.token_view"},
    "server.ui": frozenset(),  # the dashboard's static files: aiohttp only
    "worker": _CORE_BASE
    | {"core.rules", "core.store", "core.queue", "core.config", "core.logs"}
    | {"core.metrics", "core.tasks", "core.tracing", "core.bots", "core.outbound"},
    "simulator": frozenset(),
}


def layer(module: str) -> str | None:
    """``tgbroadcast.core.store.tables`` → ``core.store``, ``tgbroadcast.server.rest.app`` →
    ``server.rest``; None outside the package."""
    parts = module.split(".")
    if parts[0] != "tgbroadcast" or len(parts) < 2:
        return None
    if parts[1] in ("core", "server") and len(parts) > 2:
        return f"{parts[1]}.{parts[2]}"
    return parts[1]


def modules() -> Iterator[tuple[Path, str]]:
    for part in PARTS:
        for path in sorted((ROOT / part).rglob("*.py")):
            relative = path.relative_to(ROOT).with_suffix("")
            name = ".".join(("tgbroadcast", *relative.parts)).removesuffix(".__init__")
            yield path, name


def imported(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def test_imports_run_one_way() -> None:
    wrong = []
    for path, name in modules():
        source = layer(name)
        if source == "launcher":  # the composition root may import anything
            continue
        assert source in MAY_IMPORT, f"{source}: a new layer; say what it may import"
        for target in {layer(module) for module in imported(path)} - {None, source}:
            if target not in MAY_IMPORT[source]:
                wrong.append(f"{path.relative_to(ROOT)} ({source}) imports {target}")
    assert wrong == []


def test_nothing_imports_the_launcher() -> None:
    importers = [
        str(path.relative_to(ROOT))
        for path, name in modules()
        if layer(name) != "launcher"
        and any(layer(module) == "launcher" for module in imported(path))
    ]
    assert importers == []


def test_nothing_imports_the_old_top_level_names() -> None:
    old = {"broadcasting", "core", "server", "worker", "simulator", "launcher"}
    offenders = [
        f"{path.relative_to(ROOT)}: {module}"
        for folder in (*PARTS, "tests", "bench", "clients")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for module in imported(path)
        if module.split(".")[0] in old
    ]
    assert offenders == []


@pytest.mark.parametrize("part", [*PARTS, "gen/tgbroadcast", "clients/python", "tests"])
def test_every_package_says_what_lives_there(part: str) -> None:
    for init in sorted((ROOT / part).rglob("__init__.py")):
        docstring = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert docstring, f"{init.relative_to(ROOT)} has no docstring"
        assert len(docstring.split()) >= 8, f"{init.relative_to(ROOT)}: say what lives here"


def test_modules_and_test_files_stay_small() -> None:
    folders = (*PARTS, "tests", "bench", "clients")
    long = {
        str(path.relative_to(ROOT)): lines
        for folder in folders
        for path in sorted((ROOT / folder).rglob("*.py"))
        if "node_modules" not in path.parts
        and (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def test_a_worker_process_loads_none_of_the_apis_modules() -> None:
    """``tgbroadcast worker`` imports the launcher and the worker, never gRPC, the API's
    composition or its REST app: every worker start would pay for them (#14.5). Nor does the
    launcher import aiogram before the worker's ``import_aiogram()`` (it would build every
    model)."""
    script = (
        "import sys\n"
        "import tgbroadcast.launcher.cli, tgbroadcast.launcher.app\n"
        "print('aiogram' in sys.modules)\n"
        "import tgbroadcast.worker.runner\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    launcher, modules = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True
    ).stdout.splitlines()
    loaded = set(modules.split())
    api = {"grpc", "tgbroadcast.launcher.api", "tgbroadcast.server.rest.app", "tgbroadcast_client"}
    assert launcher == "False"
    assert "aiogram" in loaded
    assert loaded & api == set()
