"""Scenario 2: the overhead ceiling, with Telegram out of the way.

Flood control is off and the simulator answers at once, so what limits the rate is the
service itself on this machine: API → SQL → NATS → worker → simulator → SQL → event. One
gRPC ``WatchBroadcast`` follows each broadcast, so the event leg is part of every run. The
floor is aiogram sending the same recipients with 32 in flight and nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from bench.analysis import analyse, spread
from bench.children import Cluster, ServiceConfig
from bench.client import ServiceClient
from bench.databases import database_dsn
from bench.meter import cpu_per_thousand
from bench.profiles import Bench
from bench.report import (
    Chart,
    Section,
    Series,
    Table,
    Target,
    emit,
    fmt,
    fmt_range,
    progress,
    verdict,
)
from bench.runs import SERVICE_ROLES, RunResult, peer_run, track_cluster

GOAL = 2500.0
"""#14.3: messages per second end to end with two workers on two cores."""
CPU_GOAL = 0.35
"""#14.3: the service's CPU milliseconds per message with one worker."""
UNLIMITED = 1_000_000.0
"""``telegram.rate_limit`` high enough never to be what limits."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Measured:
    """One repetition: the run and its end-to-end rate (request to the last watched event)."""

    result: RunResult
    end_to_end: float | None

    @property
    def sim_cpu_per_1k(self) -> float | None:
        d = self.result.deliveries
        return cpu_per_thousand(self.result.window.cpu("simulator"), d.delivered)


async def watched_run(
    bench: Bench, cluster: Cluster, client: ServiceClient, recipients: Sequence[int], label: str
) -> Measured:
    """One broadcast to ``recipients`` over REST, followed by a gRPC watcher to its last outcome
    event; the cluster's processes measured over it (the simulator reset first)."""
    await bench.sim.reset()
    track_cluster(bench.meter, cluster)
    last_event = 0.0
    seen = 0
    async with bench.meter.measuring() as window:
        requested_at = time.time()
        broadcast_id = await client.send_rest(recipients)
        async for received_at, _ in client.watch(broadcast_id):
            last_event = received_at
            seen += 1
    calls = await bench.sim.calls()
    result = RunResult(
        label=label,
        deliveries=analyse(calls, recipients, requested_at=requested_at),
        window=window,
        requested_at=requested_at,
        done_at=last_event,
        cpu_roles=SERVICE_ROLES,
    )
    complete = seen == len(recipients) and last_event > requested_at
    end_to_end = len(recipients) / (last_event - requested_at) if complete else None
    return Measured(result=result, end_to_end=end_to_end)


def _row(name: str, runs: list[Measured], backend: str) -> list[str]:
    steady = spread([m.result.deliveries.steady_rate for m in runs])
    e2e = spread([m.end_to_end for m in runs])
    cpu = spread([m.result.cpu_per_1k for m in runs])
    sim = spread([m.sim_cpu_per_1k for m in runs])
    shares = _role_cpu(runs)
    return [
        name,
        backend,
        str(len(runs)),
        fmt_range(*steady, digits=0),
        fmt_range(*e2e, digits=0),
        fmt_range(*cpu, digits=2),
        shares,
        fmt_range(*sim, digits=2),
    ]


def _role_cpu(runs: list[Measured]) -> str:
    """CPU s per 1k messages of each of the sender's processes (medians)."""
    parts = []
    for role in runs[0].result.cpu_roles:
        values = [
            cpu_per_thousand(m.result.window.cpu(role), m.result.deliveries.delivered) for m in runs
        ]
        middle = spread(values)[0]
        if middle is not None:
            parts.append(f"{role} {fmt(middle, 2)}")
    return ", ".join(parts) or "n/a"


def _cpu_finding(service: list[Measured], floor: list[Measured]) -> str:
    """How the service's CPU per message compares with aiogram alone, and what two cores
    could carry at that cost (derived from the measured figures)."""
    ours = spread([m.result.cpu_per_1k for m in service])[0]
    bare = spread([m.result.cpu_per_1k for m in floor])[0]
    sim = spread([m.sim_cpu_per_1k for m in service])[0]
    if ours is None or bare is None or sim is None:
        return "CPU per message: not measured (psutil is missing)."
    return (
        f"CPU per message ({service[0].result.label}): the service's processes "
        f"{ours:.2f} ms, {ours / bare:.1f} times aiogram alone ({bare:.2f} ms). With the "
        f"simulator's {sim:.2f} ms, two cores doing nothing else could carry at most "
        f"{2000 / (ours + sim):,.0f} msg/s at that cost (2 / CPU seconds per message)."
    )


async def overhead(bench: Bench) -> Section:
    profile = bench.profile
    count = profile.overhead_recipients
    recipients = list(range(1, count + 1))
    section = Section(
        key="2",
        title="Overhead ceiling",
        setup=(
            f"Flood control off, the simulator answering at once; broadcasts of {fmt(count)} "
            f"recipients, each run {profile.overhead_repeats} time(s), with "
            + " and ".join(str(w) for w in profile.overhead_workers)
            + " worker processes (`worker.concurrency` = 32) on "
            + " and ".join(profile.overhead_backends)
            + " (NATS embedded), one gRPC watcher following every broadcast. *steady* is "
            "the simulator's rate between the 10th and 90th percentile delivery; *end to end* "
            "is recipients / (last outcome event at the watcher - request). CPU is per 1,000 "
            "messages; the simulator's own CPU is apart. The floor is aiogram with 32 sends in "
            "flight and no service at all."
        ),
    )
    await bench.sim.set_limits()
    rows: list[list[str]] = []
    bars: list[tuple[str, float | None]] = []
    best_two = 0.0
    first: list[Measured] = []
    one_worker: dict[str, float | None] = {}
    two_workers: dict[str, float | None] = {}
    for backend in profile.overhead_backends:
        async with database_dsn(backend) as dsn:
            if dsn is None:
                section.findings.append(f"{backend}: not measured (the server is not usable).")
                continue
            config = ServiceConfig(
                rate_limit=UNLIMITED, paid_rate_limit=UNLIMITED, database_dsn=dsn
            )
            async with (
                Cluster.start(bench.folder(f"overhead-{backend}"), bench.sim, config) as cluster,
                ServiceClient.connect(cluster.http_url, cluster.grpc_target) as client,
            ):
                for workers in profile.overhead_workers:
                    await cluster.add_workers(workers - len(cluster.workers))
                    name = f"service, {workers} worker" + ("s" if workers > 1 else "")
                    runs = []
                    for repeat in range(profile.overhead_repeats):
                        progress(f"2. {backend}, {workers} worker(s), run {repeat + 1}")
                        measured = await watched_run(bench, cluster, client, recipients, name)
                        numbers = measured.result.numbers()
                        numbers["end_to_end_rate"] = measured.end_to_end
                        emit("2", f"{backend} workers={workers} run={repeat + 1}", numbers)
                        runs.append(measured)
                    rows.append(_row(name, runs, backend))
                    first = first or runs
                    e2e = spread([m.end_to_end for m in runs])[0]
                    bars.append((f"{name}\n{backend}", e2e))
                    if workers == 2 and e2e is not None:
                        best_two = max(best_two, e2e)
                    if workers == 1:
                        one_worker[backend] = spread([m.result.cpu_per_1k for m in runs])[0]
                    if workers == 2:
                        two_workers[backend] = e2e
    floor_runs = []
    for repeat in range(profile.overhead_repeats):
        progress(f"2. floor: aiogram, run {repeat + 1}")
        result = await peer_run(
            bench,
            "aiogram-retry",
            recipients,
            rate=UNLIMITED,
            within=count / 50 + 60,
        )
        rate = result.deliveries.delivered / result.total_seconds if result.total_seconds else None
        numbers = result.numbers()
        numbers["end_to_end_rate"] = rate
        emit("2", f"floor aiogram run={repeat + 1}", numbers)
        floor_runs.append(Measured(result=result, end_to_end=rate))
    rows.append(_row("aiogram alone (floor)", floor_runs, "-"))
    bars.append(("aiogram alone\n(floor)", spread([m.end_to_end for m in floor_runs])[0]))
    section.tables.append(
        Table(
            columns=(
                "sender",
                "database",
                "runs",
                "steady msg/s",
                "end to end msg/s",
                "sender CPU s / 1k msgs",
                "by process (CPU s / 1k)",
                "simulator CPU s / 1k",
            ),
            rows=rows,
        )
    )
    if 2 in profile.overhead_workers:
        section.findings.append(
            f"Goal: {GOAL:,.0f} msg/s or more end to end with 2 workers: best median "
            f"{fmt(best_two, 0)} msg/s, {verdict(best_two >= GOAL)}."
        )
    if first:
        section.findings.append(_cpu_finding(first, floor_runs))
    bare = spread([m.result.cpu_per_1k for m in floor_runs])[0]
    for backend, cpu in one_worker.items():
        section.targets.append(
            Target(
                item="#14.3 CPU",
                measured=f"CPU ms per message, 1 worker, {backend} (aiogram alone: {fmt(bare, 2)})",
                goal=f"≤ {CPU_GOAL} (≤ 1.6 x aiogram)",
                before="1.29 (5.8 x aiogram's 0.22)" if backend == "sqlite" else "-",
                now=fmt(cpu, 2)
                + (f" ({cpu / bare:.1f} x aiogram)" if cpu is not None and bare else ""),
                met=None if cpu is None else cpu <= CPU_GOAL,
            )
        )
    for backend, rate in two_workers.items():
        section.targets.append(
            Target(
                item="#14.3 CPU",
                measured=f"end-to-end msg/s, 2 workers, {backend}",
                goal=f"≥ {GOAL:,.0f}",
                before="1,206" if backend == "sqlite" else "-",
                now=fmt(rate, 0),
                met=None if rate is None else rate >= GOAL,
            )
        )
    section.charts.append(
        Chart(
            name="overhead_ceiling",
            title="Messages per second end to end, flood control off (median of runs)",
            kind="bars",
            xlabel="",
            ylabel="messages per second",
            categories=[name for name, _ in bars],
            series=[Series(label="end to end", xs=[], ys=[value for _, value in bars])],
            target=GOAL,
            target_label=f"goal {GOAL:,.0f}/s with 2 workers",
        )
    )
    return section
