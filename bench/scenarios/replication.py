"""Scenario 9: what JetStream replication costs, a three-node R3 cluster beside one node.

The workload of scenario 2's overhead run (flood control off, the simulator answering at once,
`tgbroadcast server` and two `tgbroadcast worker` processes on SQLite, one gRPC watcher
following each broadcast to its last outcome event) against two NATS set-ups, both running
for the whole scenario:

* **R1**: the server's embedded nats-server (`nats.url` empty), every stream with one replica;
* **R3**: three real `nats-server` processes as one JetStream cluster
  (:func:`tests.fixtures.nats_cluster.nats_cluster`), `nats.url` listing all three and
  `nats.replicas: 3`, so every stream, KV bucket and object store is held by every node.

The repetitions alternate R1, R3, R1, R3... so a noisy spell on the shared machine falls on
both. While one set-up runs, the other's processes are idle and not measured. CPU is per
message sent (every accepted message, duplicates included), for the service's own processes
(server + workers) and for nats-server apart: the embedded one, or the sum of the three nodes.
All of it shares the machine's cores, so the R3 rate is what three nodes on one box reach, not
three machines.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from bench.analysis import spread
from bench.children import Cluster, ServiceConfig
from bench.client import ServiceClient
from bench.meter import Meter, cpu_per_thousand
from bench.profiles import Bench
from bench.report import Chart, Section, Series, Table, emit, fmt, fmt_range, progress, verdict
from bench.scenarios.overhead import UNLIMITED, Measured, watched_run
from tests.fixtures.nats_cluster import nats_cluster

GOAL = 0.75
"""The bar of this scenario: R3 keeps at least this share of R1's end-to-end rate."""
SERVICE = ("server", "worker")
NATS = ("nats-server",)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Setup:
    """One running service and the NATS it uses."""

    key: str
    """``R1`` or ``R3``."""
    name: str
    cluster: Cluster
    client: ServiceClient
    nats_pids: tuple[int, ...]
    """The external nats-server processes (none for R1: the server's child is measured)."""

    def pids(self) -> list[int]:
        server = [] if self.cluster.server is None else [self.cluster.server.pid]
        return server + [worker.pid for worker in self.cluster.workers] + list(self.nats_pids)


async def replication(bench: Bench) -> Section:
    profile = bench.profile
    count = profile.replication_recipients
    recipients = list(range(1, count + 1))
    section = Section(
        key="9",
        title="Replication",
        setup=(
            f"Scenario 2's workload on two NATS set-ups side by side: broadcasts of "
            f"{fmt(count)} recipients, flood control off, `tgbroadcast server` and "
            f"{profile.replication_workers} "
            "workers (`worker.concurrency` = 32, SQLite), one gRPC watcher following every "
            "broadcast to its last outcome event. **R1**: the server's embedded nats-server. "
            "**R3**: three `nats-server` processes as one JetStream cluster, `nats.url` listing "
            "all three and `nats.replicas: 3` (every stream, KV bucket and object store on "
            f"every node). Each set-up ran {profile.replication_repeats} time(s), alternating "
            "R1 and R3. *steady* and *end to end* as in §2; CPU is milliseconds per message "
            "for the service's processes (server + workers) and for nats-server apart (for R3 "
            "the sum of the three nodes). The three nodes share this machine's two cores with "
            "everything else: on three machines R3 would have more room."
        ),
    )
    await bench.sim.set_limits()
    runs: dict[str, list[Measured]] = {"R1": [], "R3": []}
    async with _setups(bench) as setups:
        for repeat in range(profile.replication_repeats):
            for setup in setups:
                progress(f"9. {setup.key}, run {repeat + 1}")
                _measure_only(bench.meter, setup, setups)
                measured = await watched_run(
                    bench, setup.cluster, setup.client, recipients, setup.name
                )
                runs[setup.key].append(measured)
                emit("9", f"{setup.key} run={repeat + 1}", _numbers(measured))
        names = {setup.key: setup.name for setup in setups}
    _report(section, runs, names)
    return section


@asynccontextmanager
async def _setups(bench: Bench) -> AsyncIterator[list[_Setup]]:
    """R1 and R3, each a running server with its workers; the NATS cluster stops last."""
    async with AsyncExitStack() as stack:
        nodes = await stack.enter_async_context(nats_cluster(bench.folder("replication-nats")))
        environ = {"TGB_NATS_URL": nodes.urls, "TGB_NATS_REPLICAS": "3"}
        node_pids = tuple(node.process.pid for node in nodes.nodes if node.process is not None)
        plans: list[tuple[str, str, dict[str, str], tuple[int, ...]]] = [
            ("R1", "single node (R1)", {}, ()),
            ("R3", "3-node cluster (R3)", environ, node_pids),
        ]
        setups = []
        for key, name, settings, pids in plans:
            config = ServiceConfig(
                rate_limit=UNLIMITED, paid_rate_limit=UNLIMITED, environ=settings
            )
            cluster = await stack.enter_async_context(
                Cluster.start(
                    bench.folder(f"replication-{key.lower()}"),
                    bench.sim,
                    config,
                    workers=bench.profile.replication_workers,
                )
            )
            client = await stack.enter_async_context(
                ServiceClient.connect(cluster.http_url, cluster.grpc_target)
            )
            setups.append(
                _Setup(key=key, name=name, cluster=cluster, client=client, nats_pids=pids)
            )
        yield setups


def _measure_only(meter: Meter, chosen: _Setup, setups: list[_Setup]) -> None:
    """Track ``chosen``'s processes (the cluster's by :func:`watched_run`), none of the
    others'."""
    for setup in setups:
        if setup is not chosen:
            for pid in setup.pids():
                meter.forget(pid)
    for pid in chosen.nats_pids:
        meter.track("nats-server", pid)


def _cpu_ms(measured: Measured, roles: tuple[str, ...]) -> float | None:
    """CPU milliseconds per message sent of ``roles``."""
    d = measured.result.deliveries
    return cpu_per_thousand(measured.result.window.cpu(*roles), d.delivered + d.duplicates)


def _numbers(measured: Measured) -> dict[str, object]:
    numbers = measured.result.numbers()
    service, nats = _cpu_ms(measured, SERVICE), _cpu_ms(measured, NATS)
    numbers["end_to_end_rate"] = measured.end_to_end
    numbers["service_cpu_ms_per_msg"] = None if service is None else round(service, 4)
    numbers["nats_cpu_ms_per_msg"] = None if nats is None else round(nats, 4)
    return numbers


@dataclass(frozen=True, slots=True)
class _Medians:
    end_to_end: float | None
    steady: float | None
    service: float | None
    nats: float | None


def _medians(runs: list[Measured]) -> _Medians:
    return _Medians(
        end_to_end=spread([m.end_to_end for m in runs])[0],
        steady=spread([m.result.deliveries.steady_rate for m in runs])[0],
        service=spread([_cpu_ms(m, SERVICE) for m in runs])[0],
        nats=spread([_cpu_ms(m, NATS) for m in runs])[0],
    )


def _row(name: str, runs: list[Measured]) -> list[str]:
    nodes = max(
        (u.processes for m in runs if (u := m.result.window.usage.get("nats-server"))),
        default=None,
    )
    return [
        name,
        fmt(nodes),
        str(len(runs)),
        fmt_range(*spread([m.result.deliveries.steady_rate for m in runs]), digits=0),
        fmt_range(*spread([m.end_to_end for m in runs]), digits=0),
        fmt_range(*spread([_cpu_ms(m, SERVICE) for m in runs]), digits=2),
        fmt_range(*spread([_cpu_ms(m, NATS) for m in runs]), digits=2),
        fmt(sum(m.result.deliveries.lost for m in runs)),
        fmt(sum(m.result.deliveries.duplicates for m in runs)),
    ]


def _report(section: Section, runs: dict[str, list[Measured]], names: dict[str, str]) -> None:
    section.tables.append(
        Table(
            columns=(
                "NATS",
                "nats-server processes",
                "runs",
                "steady msg/s",
                "end to end msg/s",
                "service CPU ms / msg (server + workers)",
                "nats-server CPU ms / msg",
                "lost",
                "duplicates",
            ),
            rows=[_row(names[key], runs[key]) for key in ("R1", "R3")],
        )
    )
    one, three = _medians(runs["R1"]), _medians(runs["R3"])
    every = runs["R1"] + runs["R3"]
    complete = all(m.end_to_end is not None and m.result.deliveries.lost == 0 for m in every)
    section.findings.append(
        "Every recipient delivered and every outcome event watched, on one node and on three: "
        f"{verdict(complete)}."
    )
    share = (
        three.end_to_end / one.end_to_end
        if three.end_to_end is not None and one.end_to_end
        else None
    )
    section.findings.append(
        f"Goal: R3 at {GOAL:.2f} of R1's end-to-end rate or more: {fmt(three.end_to_end, 0)} "
        f"against {fmt(one.end_to_end, 0)} msg/s (medians), {fmt(share)} of R1, "
        f"{verdict(share is not None and share >= GOAL)}."
    )
    section.findings.append(
        f"CPU per message, R1 → R3: the service's processes {fmt(one.service)} → "
        f"{fmt(three.service)} ms; nats-server {fmt(one.nats)} → {fmt(three.nats)} ms "
        f"({_times(three.nats, one.nats)} with three replicas)."
    )
    categories = [names["R1"], names["R3"]]
    section.charts.append(
        Chart(
            name="replication_rate",
            title="Messages per second, one nats-server (R1) and a 3-node cluster (R3)",
            kind="bars",
            xlabel="",
            ylabel="messages per second (median of runs)",
            categories=categories,
            series=[
                Series(label="end to end", xs=[], ys=[one.end_to_end, three.end_to_end]),
                Series(label="steady", xs=[], ys=[one.steady, three.steady]),
            ],
        )
    )
    section.charts.append(
        Chart(
            name="replication_cpu",
            title="CPU milliseconds per message, R1 and R3",
            kind="bars",
            xlabel="",
            ylabel="CPU ms per message (median of runs)",
            categories=categories,
            series=[
                Series(label="server + workers", xs=[], ys=[one.service, three.service]),
                Series(label="nats-server (sum of nodes)", xs=[], ys=[one.nats, three.nats]),
            ],
        )
    )


def _times(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "n/a"
    return f"{value / base:.1f} times"
