"""The deployment files in ``deploy/``, checked without a Docker daemon or a Kubernetes cluster
(docs/deployment.md): every file parses; every ``tgbroadcast`` command, ``TGB_*`` name, port and
probe path they use exists in the project — the settings each container ends up with are read
by :func:`load_settings` itself, as the container would; the probe paths answer on a live
stack; every metric a Grafana panel queries is on a live ``/metrics`` after a broadcast.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from unittest import mock

import aiohttp
import grpc
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.cluster import AUTH, cluster, environ
from tests.fixtures.environ import API_TOKEN
from tests.fixtures.services import free_port
from tests.fixtures.stack import open_backend, stack_settings, start_stack
from tests.fixtures.telegram import BOT_TOKEN
from tgbroadcast.core.config import Settings, load_settings
from tgbroadcast.core.config.loading import DEFAULTS, ENV_PREFIX
from tgbroadcast.core.domain.errors import ConfigError
from tgbroadcast.launcher.app import running_service
from tgbroadcast.launcher.cli import COMMANDS, _parser
from tgbroadcast.simulator import Simulator
from tgbroadcast.simulator.__main__ import parse_args as simulator_args
from tgbroadcast.v1 import broadcast_pb2 as pb
from tgbroadcast.v1 import broadcast_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
DOCS = REPO / "docs" / "deployment.md"
IMAGE = "tgbroadcast:local"
"""What deploy/compose.yaml calls the image it builds from deploy/Dockerfile."""
COMPOSE_ENVIRON = {"TGB_TELEGRAM_TOKEN": BOT_TOKEN, "TGB_SERVER_API_TOKEN": API_TOKEN}
"""What an operator exports before ``docker compose up`` (the file requires both)."""
HTTP_PROBE = re.compile(r"http://127\.0\.0\.1:(\d+)(/[a-z]+)")
NAME = re.compile(r"\bTGB_[A-Z0-9_]+\b")


def _yaml(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def _compose() -> dict[str, Any]:
    compose: dict[str, Any] = _interpolated(_yaml(DEPLOY / "compose.yaml")[0])
    return compose


def _kubernetes() -> list[dict[str, Any]]:
    """The manifests, and the example Secret they read (``example/``: never applied)."""
    paths = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
    paths += sorted((DEPLOY / "kubernetes" / "example").glob("*.yaml"))
    return [doc for path in paths for doc in _yaml(path)]


def _prometheus_jobs() -> dict[str, dict[str, Any]]:
    config = _yaml(DEPLOY / "prometheus" / "prometheus.yml")[0]
    return {job["job_name"]: job for job in config["scrape_configs"]}


def _dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(
        (DEPLOY / "grafana" / "dashboards" / "tgbroadcast.json").read_text(encoding="utf-8")
    )
    return dashboard


# --- compose's variable substitution -------------------------------------------------------

_VARIABLE = re.compile(r"\$(?:\$|\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})")


def _substitute(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name, op, arg = match["name"], match["op"] or "", match["arg"] or ""
        value = COMPOSE_ENVIRON.get(name)
        if op.startswith(":") and not value:
            value = None
        if value is None:
            if op.endswith("?"):
                pytest.fail(f"deploy/compose.yaml needs ${name}: {arg}")
            value = arg if op else ""
        return value

    return _VARIABLE.sub(one, text)


def _interpolated(node: Any) -> Any:
    if isinstance(node, str):
        return _substitute(node)
    if isinstance(node, dict):
        return {key: _interpolated(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_interpolated(item) for item in node]
    return node


# --- the Dockerfile -----------------------------------------------------------------------


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, arguments = pending.strip().partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _dockerfile():
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def _image_environ() -> dict[str, str]:
    """The ``TGB_*`` variables the runtime stage sets with ``ENV``."""
    found: dict[str, str] = {}
    for keyword, arguments in _stages()[-1]:
        if keyword == "ENV":
            pairs = (item.partition("=") for item in shlex.split(arguments))
            found.update({k: v for k, _, v in pairs if k.startswith(ENV_PREFIX)})
    return found


def _image_healthcheck() -> str:
    (healthcheck,) = [args for keyword, args in _stages()[-1] if keyword == "HEALTHCHECK"]
    return healthcheck


def _image_probe_port(environ: Mapping[str, str]) -> int:
    """The port the image's HEALTHCHECK probes in a container with ``environ``: its command
    is run with that environment and a ``urlopen`` that records the address asked for."""
    command = json.loads(_image_healthcheck().split("CMD", 1)[1])
    assert command[:2] == ["python", "-c"], "the HEALTHCHECK runs Python (no curl in the image)"
    asked: list[str] = []

    def urlopen(url: str, timeout: float) -> None:
        asked.append(url)

    with (
        mock.patch.dict(os.environ, environ, clear=True),
        mock.patch("urllib.request.urlopen", urlopen),
    ):
        exec(command[2], {})  # noqa: S102 - the image's own command, as Docker runs it
    (url,) = asked
    found = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/livez", url)
    assert found, url
    return int(found[1])


# --- what a container of the image runs ----------------------------------------------------


def _settings(
    argv: list[str], environ: Mapping[str, str], tmp_path: Path, config: str | None = None
) -> tuple[str, Settings]:
    """The command ``tgbroadcast ARGV`` runs and the settings it reads, as ``cli.main`` does."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"`tgbroadcast {shlex.join(argv)}` is not a valid command line")
    path = None
    if args.config is not None:
        assert config is not None, f"nothing is mounted at {args.config}"
        path = tmp_path / "config.yaml"
        path.write_text(config, encoding="utf-8")
    try:
        settings = load_settings(path, environ={**_image_environ(), **environ}, base_dir=tmp_path)
        if args.command in ("run", "server"):
            settings.require_api_tokens()
        if args.command in ("run", "worker"):
            settings.require_bots()
    except ConfigError as exc:
        pytest.fail(f"`tgbroadcast {shlex.join(argv)}` would not start: {exc}")
    return str(args.command), settings


def _setting_of(name: str) -> str | None:
    """The settings key an environment variable sets, as ``load_settings`` reads it."""
    rest = name.removeprefix(ENV_PREFIX).lower()
    if rest in DEFAULTS[""]:
        return rest
    section, _, key = rest.partition("_")
    return f"{section}.{key}" if section and key in DEFAULTS.get(section, {}) else None


# --- parsing and the image -----------------------------------------------------------------


def test_every_deployment_file_parses() -> None:
    yamls = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
    assert len(yamls) >= 8
    for path in yamls:
        assert _yaml(path), f"{path.relative_to(REPO)} is empty"
    assert {"Namespace", "ConfigMap", "Secret", "Job", "Deployment", "Service"} <= {
        doc["kind"] for doc in _kubernetes()
    }
    assert len([d for d in _kubernetes() if d["kind"] == "PodDisruptionBudget"]) == 2
    assert _dashboard()["panels"]


def test_the_dockerfile_builds_a_slim_non_root_image_with_the_proto() -> None:
    stages = _stages()
    assert len(stages) >= 2, "multi-stage: a builder and the runtime"
    arguments = dict(a.partition("=")[::2] for k, a in _dockerfile() if k == "ARG")
    runtime = stages[-1]
    base = runtime[0][1].split()[0]
    assert re.sub(r"\$\{(\w+)\}", lambda m: arguments[m[1]], base) == "python:3.11-slim"
    builder = " ".join(a for _, a in stages[0])
    assert "pip wheel" in builder
    # The builder copies every folder pyproject.toml packages (its package-dir).
    package_dirs = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
        "setuptools"
    ]["package-dir"]
    copied = [Path(a.split()[0]) for k, a in stages[0] if k == "COPY"]
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").split()
    sent = [Path(line[1:]) for line in ignore if line.startswith("!")]  # what the context holds
    for folder in map(Path, package_dirs.values()):
        assert any(folder.is_relative_to(c) for c in copied), f"{folder} not copied"
        assert any(folder.is_relative_to(s) for s in sent), f"{folder} not in the context"
    instructions = dict(runtime)
    user = instructions["USER"].split(":")[0]
    assert user not in ("0", "root"), "the runtime runs as a user without privileges"
    assert any(k == "COPY" and a.startswith("--from=builder") for k, a in runtime)
    assert any(k == "COPY" and a.split()[0] == "proto/" for k, a in runtime)
    assert "!proto/" in ignore
    assert "/livez" in _image_healthcheck()
    assert json.loads(instructions["ENTRYPOINT"]) == ["tgbroadcast"]
    server = DEFAULTS["server"]
    assert instructions["EXPOSE"].split() == [str(server["port"]), str(server["grpc_port"])]
    assert _image_probe_port({}) == server["port"]
    assert _image_probe_port({"TGB_SERVER_PORT": "9000"}) == 9000
    # A standalone worker given a metrics port is probed there: the API port is not served.
    assert _image_probe_port({"TGB_SERVER_PORT": "9000", "TGB_WORKER_METRICS_PORT": "9100"}) == 9100
    # The proto inside: the wheel ships the stubs' copy; it is the contract's own text.
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert "*.proto" in package_data["tool"]["setuptools"]["package-data"]["tgbroadcast.v1"]
    for proto in (REPO / "proto").rglob("*.proto"):
        shipped = REPO / "gen" / proto.relative_to(REPO / "proto")
        assert shipped.read_bytes() == proto.read_bytes()


def test_every_environment_name_is_a_setting() -> None:
    sources = [p for p in DEPLOY.rglob("*") if p.is_file()] + [DOCS]
    unknown = {
        f"{name} ({path.relative_to(REPO)})"
        for path in sources
        for name in NAME.findall(path.read_text(encoding="utf-8"))
        if _setting_of(name) is None
    }
    assert unknown == set(), "not in DEFAULTS (core/config/loading.py)"


def test_every_tgbroadcast_command_exists() -> None:
    texts = [p.read_text(encoding="utf-8") for p in DEPLOY.rglob("*") if p.is_file()]
    used = {m for text in [*texts, DOCS.read_text("utf-8")] for m in _commands_in(text)}
    assert used >= {"migrate", "server", "worker"}
    assert used <= {*COMMANDS, "send"}, used - {*COMMANDS, "send"}


def _commands_in(text: str) -> Iterator[str]:
    """``tgbroadcast COMMAND`` written as a shell command (in backquotes or a code line)."""
    for match in re.finditer(r"(?:`|^\s*|\$ )tgbroadcast ((?:--?\S+ \S+ )*)([a-z]+)", text, re.M):
        yield match[2]


# --- compose --------------------------------------------------------------------------------


def _nats_nodes() -> dict[str, dict[str, str]]:
    """compose's NATS services: name -> their nats-server flags."""
    services = _compose()["services"]
    return {
        name: dict(flag.partition("=")[::2] for flag in service["command"])
        for name, service in services.items()
        if str(service.get("image", "")).startswith("nats:")
    }


def test_compose_runs_a_three_node_jetstream_cluster() -> None:
    nodes = _nats_nodes()
    assert len(nodes) == 3
    routes = sorted(f"nats://{name}:6222" for name in nodes)
    for name, flags in nodes.items():
        assert "--jetstream" in flags
        assert flags["--name"] == name
        assert sorted(flags["--routes"].split(",")) == routes
    assert len({flags["--cluster_name"] for flags in nodes.values()}) == 1


def test_compose_runs_migrate_server_workers_and_prometheus(tmp_path: Path) -> None:
    services = _compose()["services"]
    nats = _nats_nodes()
    ours = {name: s for name, s in services.items() if s.get("image") == IMAGE}
    commands: dict[str, tuple[str, Settings]] = {}
    for name, service in ours.items():
        if "entrypoint" in service:  # the simulator, optional
            assert service["entrypoint"] == ["python", "-m", "tgbroadcast.simulator"]
            assert simulator_args(service["command"]).host == "0.0.0.0"
            continue
        commands[name] = _settings(service["command"], service["environment"], tmp_path)
    assert {name: command for name, (command, _) in commands.items()} == {
        "migrate": "migrate",
        "server": "server",
        "worker": "worker",
    }
    for name in ("server", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert {n for n in nats if depends[n]["condition"] == "service_healthy"} == set(nats)
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"

    for _, settings in commands.values():
        hosts = [url.split("//")[1] for url in settings.nats.url.split(",")]
        assert sorted(hosts) == sorted(f"{name}:4222" for name in nats)
        assert settings.nats.replicas == 3
        assert settings.database.url.startswith("postgresql+asyncpg://")
        assert "@postgres:5432/" in settings.database.url
        assert "postgres" in services

    server = commands["server"][1].server
    published = {int(p.split(":")[-1]) for p in services["server"]["ports"]}
    assert published == {server.port, server.grpc_port}
    assert server.host == "0.0.0.0"
    assert _image_probe_port(services["server"]["environment"]) == server.port

    worker = services["worker"]
    metrics_port = commands["worker"][1].worker.metrics_port
    assert metrics_port != 0
    assert "ports" not in worker
    assert "container_name" not in worker
    (probe,) = HTTP_PROBE.findall(" ".join(worker["healthcheck"]["test"]))
    assert probe == (str(metrics_port), "/livez")
    assert commands["worker"][1].server.host == "0.0.0.0"  # the probe port listens there

    jobs = _prometheus_jobs()
    assert jobs["tgbroadcast-server"]["static_configs"][0]["targets"] == [f"server:{server.port}"]
    (workers,) = jobs["tgbroadcast-worker"]["dns_sd_configs"]
    assert (workers["names"], workers["type"], workers["port"]) == (["worker"], "A", metrics_port)

    for name, service in services.items():  # what compose mounts from deploy/ exists
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source}"
    assert services["server"]["environment"]["TGB_LOG_FORMAT"] == "json"


def test_grafana_is_provisioned_with_the_dashboard() -> None:
    (datasource,) = _yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yaml")[0][
        "datasources"
    ]
    assert datasource["url"] == "http://prometheus:9090"
    (provider,) = _yaml(DEPLOY / "grafana/provisioning/dashboards/tgbroadcast.yaml")[0]["providers"]
    mounts = dict(v.split(":")[:2][::-1] for v in _compose()["services"]["grafana"]["volumes"])
    assert mounts[provider["options"]["path"]] == "./grafana/dashboards"
    for panel in _dashboard()["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == datasource["uid"], panel["title"]


# --- Kubernetes -----------------------------------------------------------------------------


def _secret_environ(secret: dict[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in secret.get("stringData", {}).items()}


def _pod_settings(
    workload: dict[str, Any], docs: list[dict[str, Any]], tmp_path: Path
) -> tuple[str, Settings, dict[str, Any]]:
    """What the workload's one container runs, with its settings (Secret and ConfigMap read)."""
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    pod = workload["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(_secret_environ(by_name["Secret", source["secretRef"]["name"]]))
    env.update({item["name"]: item["value"] for item in container.get("env", [])})
    args: list[str] = container["args"]
    config = None
    if "--config" in args:
        path = Path(args[args.index("--config") + 1])
        (mount,) = [m for m in container["volumeMounts"] if path.parent == Path(m["mountPath"])]
        (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        config = by_name["ConfigMap", volume["configMap"]["name"]]["data"][path.name]
    command, settings = _settings(args, env, tmp_path, config)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]
    assert env.get("TGB_LOG_FORMAT") == "json"
    return command, settings, container


def _probe(container: dict[str, Any], kind: str) -> tuple[int, str]:
    get = container[kind]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    return int(ports.get(get["port"], get["port"])), str(get["path"])


def test_kubernetes_manifests_run_what_the_project_serves(tmp_path: Path) -> None:
    docs = _kubernetes()
    workloads = {d["metadata"]["name"]: d for d in docs if d["kind"] in ("Deployment", "Job")}
    roles = {name: _pod_settings(w, docs, tmp_path) for name, w in workloads.items()}
    assert {name: role[0] for name, role in roles.items()} == {
        "tgbroadcast-migrate": "migrate",
        "tgbroadcast-server": "server",
        "tgbroadcast-worker": "worker",
    }
    for _, settings, _ in roles.values():
        assert settings.nats.replicas == 3
        assert len(settings.nats.url.split(",")) == 3
    (secret,) = [d for d in docs if d["kind"] == "Secret"]
    assert all("REPLACE" in value for value in _secret_environ(secret).values())

    _, settings, server = roles["tgbroadcast-server"]
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert ports == {"http": settings.server.port, "grpc": settings.server.grpc_port}
    assert settings.server.host == "0.0.0.0"
    assert _probe(server, "livenessProbe") == (settings.server.port, "/livez")
    assert _probe(server, "readinessProbe") == (settings.server.port, "/readyz")
    (service,) = [d for d in docs if d["kind"] == "Service"]
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)
    grace = workloads["tgbroadcast-server"]["spec"]["template"]["spec"]
    assert grace["terminationGracePeriodSeconds"] > settings.server.shutdown_grace

    _, settings, worker = roles["tgbroadcast-worker"]
    assert settings.worker.metrics_port != 0
    assert _probe(worker, "livenessProbe") == (settings.worker.metrics_port, "/livez")
    assert _probe(worker, "readinessProbe") == (settings.worker.metrics_port, "/readyz")

    budgets = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
        assert [b for b in budgets if b["spec"]["selector"]["matchLabels"] == selector]
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert int(annotations["prometheus.io/port"]) in {
            p["containerPort"] for p in container["ports"]
        }
    values = _yaml(DEPLOY / "helm" / "nats-values.yaml")[0]["config"]
    assert values["cluster"] == {"enabled": True, "replicas": 3}
    assert values["jetstream"]["enabled"] is True


# --- live: probe paths and metric names -----------------------------------------------------


def _probe_paths() -> tuple[set[str], set[str]]:
    """Every HTTP path the deployment files probe or scrape: (on the API, on a worker)."""
    server = {"/livez"} if "/livez" in _image_healthcheck() else set()
    worker = {
        HTTP_PROBE.findall(" ".join(_compose()["services"]["worker"]["healthcheck"]["test"]))[0][1]
    }
    for doc in _kubernetes():
        if doc["kind"] != "Deployment":
            continue
        template = doc["spec"]["template"]
        (container,) = template["spec"]["containers"]
        paths = {c["httpGet"]["path"] for k, c in container.items() if k.endswith("Probe")}
        paths.add(template["metadata"]["annotations"]["prometheus.io/path"])
        (server if container["name"] == "server" else worker).update(paths)
    jobs = _prometheus_jobs()
    server.add(jobs["tgbroadcast-server"].get("metrics_path", "/metrics"))
    worker.add(jobs["tgbroadcast-worker"].get("metrics_path", "/metrics"))
    return server, worker


async def test_every_probe_path_is_served(simulator: Simulator, tmp_path: Path) -> None:
    on_server, on_worker = _probe_paths()
    assert on_server == on_worker == {"/livez", "/readyz", "/metrics"}
    port = free_port()
    overrides = {"TGB_WORKER_METRICS_PORT": str(port)}
    async with (
        open_backend("sqlite", tmp_path) as backend,
        start_stack(backend, simulator) as stack,
        running_service(stack_settings(backend, simulator, overrides), api=False, workers=1),
        aiohttp.ClientSession() as session,
    ):
        for base, paths in ((stack.http_url, on_server), (f"http://127.0.0.1:{port}", on_worker)):
            for path in sorted(paths):
                async with session.get(base + path) as response:
                    assert response.status == 200, f"{base}{path}: {response.status}"


_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
_PROMQL_WORDS |= {"and", "or", "unless", "offset"}


def _metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression reads (not its functions, labels or keywords)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expression)  # label values
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\$\{?\w+\}?", "", text)  # matchers, ranges, variables
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        if match[0] in _PROMQL_WORDS or text[match.end() :].lstrip().startswith("("):
            continue  # a keyword, a function or an aggregation
        names.add(match[0])
    return names


def _dashboard_metric_names() -> set[str]:
    return {
        name
        for panel in _dashboard()["panels"]
        for target in panel.get("targets", [])
        for name in _metric_names(target["expr"])
    }


def test_metric_names_are_read_from_promql() -> None:
    expression = 'histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{route!~".*"}[5m])))'
    assert _metric_names(expression) == {"a_bucket"}
    assert _metric_names("max by (tier) (b) / on (tier) sum(rate(c_total[$__rate_interval]))") == {
        "b",
        "c_total",
    }


def _exposed(text: str) -> set[str]:
    return {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }


async def test_every_dashboard_metric_is_on_a_live_metrics_page(
    simulator: Simulator, tmp_path: Path
) -> None:
    """A ``tgbroadcast server`` and a ``tgbroadcast worker`` process (what compose runs), one
    broadcast sent over HTTP and watched over gRPC and SSE: the union of both processes'
    ``/metrics`` holds every name the dashboard queries."""
    wanted = _dashboard_metric_names()
    assert {"tgb_rate_permits_total", "tgb_rate_limit_per_second", "tgb_watchers"} <= wanted
    metrics_port = free_port()
    async with open_backend("sqlite", tmp_path) as backend:
        env = environ(backend, simulator, TGB_WORKER_METRICS_PORT=str(metrics_port))
        async with cluster(env, tmp_path) as services, aiohttp.ClientSession() as session:
            await services.server()
            await services.worker()
            broadcast_id = await services.send([1, 2, 3])
            await services.watch(broadcast_id)  # gRPC: ends after the last outcome
            target = f"127.0.0.1:{env['TGB_SERVER_GRPC_PORT']}"
            async with grpc.aio.insecure_channel(target) as channel:
                # A unary call too: recorded before its answer leaves (a stream may be
                # recorded just after the client saw its end).
                done = await pb_grpc.BroadcastServiceStub(channel).GetBroadcast(
                    pb.GetBroadcastRequest(broadcast_id=broadcast_id),
                    metadata=(("authorization", f"Bearer {API_TOKEN}"),),
                )
            assert done.broadcast.status == pb.BROADCAST_STATUS_COMPLETED
            events = f"{services.http_url}/v1/broadcasts/{broadcast_id}/events"
            async with session.get(events, headers=AUTH) as response:
                assert "event: end" in await response.text()
            exposed: set[str] = set()
            for url in (services.http_url, f"http://127.0.0.1:{metrics_port}"):
                async with session.get(url + "/metrics") as response:
                    assert response.status == 200
                    exposed |= _exposed(await response.text())
    missing = sorted(wanted - exposed)
    assert not missing, f"queried by the dashboard, served by nobody: {missing}"
