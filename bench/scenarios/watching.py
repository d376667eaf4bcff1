"""Scenario 5: many watchers on one fast broadcast.

The same broadcast (flood limit and ``telegram.rate_limit`` at the profile's rate, two
workers) runs twice: without watchers, then with ``N`` gRPC ``WatchBroadcast`` streams opened
right after the 202 (from :mod:`bench.watchers` processes of 50 streams each). Every watcher
must get every outcome exactly once and a closing message. SSE is not measured: the service
has no SSE endpoint yet.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from bench.analysis import analyse, percentile
from bench.children import API_TOKEN, Child, Cluster, ServiceConfig, read_line, spawn
from bench.client import ServiceClient, finished_at
from bench.meter import cpu_per_thousand
from bench.profiles import Bench
from bench.report import Chart, Section, Series, Table, emit, fmt, progress, verdict
from bench.runs import SERVICE_ROLES, RunResult, service_run, track_cluster

PER_PROCESS = 50


async def watchers(bench: Bench) -> Section:
    profile = bench.profile
    rate = profile.watch_rate
    count = profile.watch_recipients
    wanted = profile.watchers
    recipients = list(range(1, count + 1))
    section = Section(
        key="5",
        title="Watchers",
        setup=(
            f"A broadcast to {fmt(count)} recipients at {rate}/s (the simulator's limit and "
            "`telegram.rate_limit`), two workers, SQLite: once with no watcher, once with "
            f"{wanted} concurrent gRPC `WatchBroadcast` streams opened right after the 202 "
            f"(in {math.ceil(wanted / PER_PROCESS)} client process(es) of up to {PER_PROCESS} "
            "streams, on the same 2 cores). *Lag* is when an outcome reached a watcher minus "
            "the outcome's `finished_at` (stamped by the worker when Telegram answered). "
            "SSE clients are not measured: the service has no SSE endpoint yet."
        ),
    )
    await bench.sim.set_limits(bot=rate)
    config = ServiceConfig(rate_limit=rate)
    async with (
        Cluster.start(bench.folder("watchers"), bench.sim, config, workers=2) as cluster,
        ServiceClient.connect(cluster.http_url, cluster.grpc_target) as client,
    ):
        progress("5. the broadcast without watchers")
        alone = await service_run(
            bench, cluster, client, recipients, label="no watchers", within=count / 50 + 60
        )
        emit("5", "no watchers", alone.numbers(rate))
        progress(f"5. the broadcast with {wanted} watchers")
        watched, outcome = await _watched_run(bench, cluster, client, recipients, wanted)
    lags = [lag / 1000 for lag in outcome["lags_ms"]]
    per_watcher: list[dict[str, Any]] = outcome["watchers"]
    complete = sum(
        1
        for w in per_watcher
        if w["results"] == count and w["distinct"] == count and w["status"] != "none"
    )
    numbers = watched.numbers(rate)
    numbers |= {
        "watchers": wanted,
        "watchers_complete": complete,
        "lag_p50_s": percentile(lags, 0.5),
        "lag_p99_s": percentile(lags, 0.99),
        "lag_max_s": max(lags, default=None),
        "errors": sorted({w["error"] for w in per_watcher if w["error"]}),
    }
    emit("5", f"{wanted} watchers", numbers)
    rows = []
    for result, name, lag_text in (
        (alone, "none", "-"),
        (
            watched,
            str(wanted),
            f"{fmt(percentile(lags, 0.5), 2)} / {fmt(percentile(lags, 0.99), 2)} / "
            f"{fmt(max(lags, default=None), 2)}",
        ),
    ):
        d = result.deliveries
        server_cpu = result.window.cpu("server")
        rows.append(
            [
                name,
                fmt(d.steady_rate, 0),
                fmt(result.total_seconds, 1),
                f"{complete} of {wanted}" if result is watched else "-",
                lag_text,
                fmt(server_cpu, 1),
                fmt(cpu_per_thousand(server_cpu, d.delivered), 2),
                fmt(result.window.cpu("watchers"), 1) if result is watched else "-",
            ]
        )
    section.tables.append(
        Table(
            columns=(
                "watchers",
                "steady msg/s",
                "broadcast total (s)",
                "watchers that got every outcome once",
                "lag p50 / p99 / max (s)",
                "server CPU s",
                "server CPU s / 1k msgs",
                "watcher clients CPU s",
            ),
            rows=rows,
        )
    )
    section.findings.append(
        f"Every watcher gets every outcome: {verdict(complete == wanted)} ({complete} of {wanted})."
    )
    streamed = sum(w["results"] for w in per_watcher)
    server_cpu = watched.window.cpu("server")
    alone_cpu = alone.window.cpu("server")
    if server_cpu is not None and alone_cpu is not None and streamed:
        section.findings.append(
            f"The server streamed {fmt(streamed)} outcome messages ({wanted} watchers x "
            f"{fmt(count)}) for {fmt(server_cpu - alone_cpu, 1)} CPU s more than without "
            f"watchers ({fmt((server_cpu - alone_cpu) * 1000 / streamed, 2)} ms each); the "
            f"broadcast's steady rate went from {fmt(alone.deliveries.steady_rate, 0)} to "
            f"{fmt(watched.deliveries.steady_rate, 0)} msg/s; lag p99 "
            f"{fmt(percentile(lags, 0.99), 2)} s."
        )
    section.charts.append(
        Chart(
            name="watchers_lag",
            title=f"Lag from delivery to watcher, {wanted} gRPC watchers at {rate}/s",
            kind="cdf",
            xlabel="lag (s)",
            ylabel="share of outcomes",
            series=[Series(label=f"{wanted} watchers", xs=[], ys=lags)],
        )
    )
    return section


async def _watched_run(
    bench: Bench,
    cluster: Cluster,
    client: ServiceClient,
    recipients: list[int],
    wanted: int,
) -> tuple[RunResult, dict[str, Any]]:
    folder = bench.folder("watchers")
    sizes = [min(PER_PROCESS, wanted - start) for start in range(0, wanted, PER_PROCESS)]
    async with AsyncExitStack() as stack:
        clients: list[tuple[Child, Path]] = []
        for i, size in enumerate(sizes):
            out = folder / f"watchers-{i}.json"
            args = [sys.executable, "-m", "bench.watchers", "--target", cluster.grpc_target]
            args += ["--token", API_TOKEN, "--count", str(size), "--out", str(out)]
            child = await stack.enter_async_context(
                spawn(args, name=f"watchers-{i}", folder=folder, pipe_stdout=True, pipe_stdin=True)
            )
            clients.append((child, out))
        for child, _ in clients:
            if await read_line(child) != "ready":
                raise child.failure("did not print 'ready'")
            bench.meter.track("watchers", child.pid)
        await bench.sim.reset()
        track_cluster(bench.meter, cluster)
        async with bench.meter.measuring() as window:
            requested_at = time.time()
            broadcast_id = await client.send_rest(recipients)
            for child, _ in clients:
                assert child.proc.stdin is not None
                child.proc.stdin.write(f"{broadcast_id}\n".encode())
            await asyncio.gather(*(_drain(child) for child, _ in clients))
            state = await client.wait_final(broadcast_id, within=60)
            for child, _ in clients:
                await read_line(child, within=len(recipients) / 10 + 120)
        for child, _ in clients:
            bench.meter.forget(child.pid)
        merged: dict[str, Any] = {"watchers": [], "lags_ms": []}
        for _, out in clients:
            data = json.loads(out.read_text(encoding="utf-8"))
            merged["watchers"] += data["watchers"]
            merged["lags_ms"] += data["lags_ms"]
    calls = await bench.sim.calls()
    result = RunResult(
        label=f"{wanted} watchers",
        deliveries=analyse(calls, recipients, requested_at=requested_at),
        window=window,
        requested_at=requested_at,
        done_at=finished_at(state) or time.time(),
        cpu_roles=SERVICE_ROLES,
    )
    return result, merged


async def _drain(child: Child) -> None:
    assert child.proc.stdin is not None
    await child.proc.stdin.drain()
