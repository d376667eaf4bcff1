"""Scenario 5: many watchers on one fast broadcast.

The same broadcast (flood limit and ``telegram.rate_limit`` at the profile's rate, two
workers) runs twice: without watchers, then with ``N`` gRPC ``WatchBroadcast`` streams opened
right after the 202 (``max_batch``: :data:`MAX_BATCH`) and as many SSE streams
(``/v1/broadcasts/{id}/events``), from
:mod:`bench.watchers` processes of 50 streams each. Every watcher must get every outcome
exactly once and a closing message.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.analysis import analyse, percentile
from bench.children import API_TOKEN, Child, Cluster, ServiceConfig, read_line, spawn
from bench.client import ServiceClient, finished_at
from bench.meter import cpu_per_thousand, cpu_seconds, resident_mb
from bench.profiles import Bench
from bench.report import Chart, Section, Series, Table, Target, emit, fmt, progress, verdict
from bench.runs import SERVICE_ROLES, RunResult, service_run, track_cluster

PER_PROCESS = 50
MAX_BATCH = 100
"""The gRPC watchers' ``max_batch``: up to this many outcomes per message."""


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
            f"{wanted} concurrent gRPC `WatchBroadcast` streams (`max_batch` = {MAX_BATCH}: "
            "the outcomes ready when the server writes, up to that many, in one message) and "
            f"{wanted} SSE streams opened right after the 202 "
            f"(in {2 * math.ceil(wanted / PER_PROCESS)} client processes of up to "
            f"{PER_PROCESS} streams, on the same 2 cores). *Lag* is when an outcome reached a "
            "watcher minus the outcome's `finished_at` (stamped by the worker when Telegram "
            "answered)."
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
        idle = profile.idle_watchers
        progress(f"5. {idle} idle watchers")
        idle_mb, idle_cpu = await _idle_watchers(bench, cluster, client, idle)
    emit(
        "5",
        f"{idle} idle watchers",
        {"idle_watchers": idle, "server_rss_growth_mb": idle_mb, "server_cpu_per_s": idle_cpu},
    )
    section.findings.append(
        f"{fmt(idle)} idle watchers (half gRPC, half SSE) of a scheduled broadcast grew the "
        f"server's resident memory by {fmt(idle_mb, 1)} MB (target < 50 MB): "
        f"{verdict(idle_mb < 50)}; they share one NATS consumer. While they waited the "
        f"server used {fmt(idle_cpu, 3)} CPU seconds per second (each watcher's quiet "
        "second reads the broadcast through the process's one shared read)."
    )
    lags = [lag / 1000 for lag in outcome["lags_ms"]]
    per_watcher: list[dict[str, Any]] = outcome["watchers"]
    complete = sum(
        1
        for w in per_watcher
        if w["results"] == count and w["distinct"] == count and w["status"] != "none"
    )
    streams = 2 * wanted
    by_transport = {
        transport: [lag / 1000 for lag in outcome[f"lags_ms_{transport}"]]
        for transport in ("grpc", "sse")
    }
    numbers = watched.numbers(rate)
    numbers |= {
        "watchers": streams,
        "watchers_complete": complete,
        "lag_p50_s": percentile(lags, 0.5),
        "lag_p99_s": percentile(lags, 0.99),
        "lag_max_s": max(lags, default=None),
        "lag_p99_grpc_s": percentile(by_transport["grpc"], 0.99),
        "lag_p99_sse_s": percentile(by_transport["sse"], 0.99),
        "errors": sorted({str(w["error"]) for w in per_watcher if w["error"]}),
    }
    emit("5", f"{wanted} watchers", numbers)
    rows = []
    for result, name, lag_text in (
        (alone, "none", "-"),
        (
            watched,
            f"{wanted} gRPC + {wanted} SSE",
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
                f"{complete} of {streams}" if result is watched else "-",
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
        f"Every watcher gets every outcome: {verdict(complete == streams)} "
        f"({complete} of {streams})."
    )
    section.findings.append(
        f"Lag p99 {fmt(percentile(lags, 0.99), 2)} s (gRPC "
        f"{fmt(percentile(by_transport['grpc'], 0.99), 2)} s, SSE "
        f"{fmt(percentile(by_transport['sse'], 0.99), 2)} s; target < 0.5 s): "
        f"{verdict((percentile(lags, 0.99) or 0) < 0.5)}."
    )
    streamed = sum(w["results"] for w in per_watcher)
    server_cpu = watched.window.cpu("server")
    alone_cpu = alone.window.cpu("server")
    if server_cpu is not None and alone_cpu is not None and streamed:
        grpc_messages = sum(w.get("messages", 0) for w in per_watcher)
        section.findings.append(
            f"The server streamed {fmt(streamed)} outcomes ({streams} watchers x "
            f"{fmt(count)}; the gRPC watchers' in {fmt(grpc_messages)} messages) for "
            f"{fmt(server_cpu - alone_cpu, 1)} CPU s more than without watchers "
            f"({fmt((server_cpu - alone_cpu) * 1000 / streamed, 4)} ms each, target 0.02; at "
            "78ce160, with a NATS consumer per watcher and a message per outcome: 0.13); the "
            f"broadcast's steady rate went from {fmt(alone.deliveries.steady_rate, 0)} to "
            f"{fmt(watched.deliveries.steady_rate, 0)} msg/s (at 78ce160 with 100 gRPC "
            "watchers: 781 to 556, lag p99 25.3 s). The watchers' clients used "
            f"{fmt(watched.window.cpu('watchers'), 1)} CPU s on the same 2 cores; the workers "
            f"{fmt(watched.window.cpu('worker'), 1)} (without watchers "
            f"{fmt(alone.window.cpu('worker'), 1)}): what the run asks of the two cores is "
            "in docs/profiles.md (Watchers)."
        )
    section.targets += _targets(
        lags=lags,
        by_transport=by_transport,
        complete=(complete, streams),
        rates=(alone.deliveries.steady_rate, watched.deliveries.steady_rate),
        per_watcher_ms=None
        if server_cpu is None or alone_cpu is None or not streamed
        else (server_cpu - alone_cpu) * 1000 / streamed,
        idle=(idle, idle_mb),
    )
    section.charts.append(
        Chart(
            name="watchers_lag",
            title=f"Lag from delivery to watcher, {wanted} gRPC + {wanted} SSE at {rate}/s",
            kind="cdf",
            xlabel="lag (s)",
            ylabel="share of outcomes",
            series=[
                Series(label=f"{wanted} {name}", xs=[], ys=by_transport[key])
                for key, name in (("grpc", "gRPC"), ("sse", "SSE"))
            ],
        )
    )
    return section


def _targets(
    *,
    lags: list[float],
    by_transport: dict[str, list[float]],
    complete: tuple[int, int],
    rates: tuple[float | None, float | None],
    per_watcher_ms: float | None,
    idle: tuple[int, float],
) -> list[Target]:
    """#14.1 against the figures it quoted from 78ce160."""
    p99 = percentile(lags, 0.99)
    alone, watched = rates
    change = None if not alone or watched is None else watched / alone - 1
    item = "#14.1 streams"
    return [
        Target(
            item=item,
            measured="lag p99 (s), every watcher (gRPC / SSE)",
            goal="< 0.5",
            before="25.3 (100 gRPC) / 3.5 (100 SSE, probed)",
            now=f"{fmt(p99, 2)} ({fmt(percentile(by_transport['grpc'], 0.99), 2)} / "
            f"{fmt(percentile(by_transport['sse'], 0.99), 2)})",
            met=None if p99 is None else p99 < 0.5,
        ),
        Target(
            item=item,
            measured="watchers with every outcome exactly once",
            goal="all",
            before="-",
            now=f"{complete[0]} of {complete[1]}",
            met=complete[0] == complete[1],
        ),
        Target(
            item=item,
            measured="broadcast's steady rate watched vs not",
            goal="within 5 %",
            before="781 → 556 msg/s (-29 %)",
            now="n/a"
            if change is None
            else f"{fmt(alone, 0)} → {fmt(watched, 0)} msg/s ({change * 100:+.0f} %)",
            met=None if change is None else abs(change) <= 0.05,
        ),
        Target(
            item=item,
            measured="server CPU ms per outcome per watcher",
            goal="≤ 0.02",
            before="0.13",
            now=fmt(per_watcher_ms, 3),
            met=None if per_watcher_ms is None else per_watcher_ms <= 0.02,
        ),
        Target(
            item=item,
            measured=f"{fmt(idle[0])} idle watchers: server memory (MB), NATS consumers",
            goal="< 50, none each",
            before="a consumer each",
            now=f"{fmt(idle[1], 1)}, one shared",
            met=idle[1] < 50,
        ),
    ]


async def _idle_watchers(
    bench: Bench, cluster: Cluster, client: ServiceClient, count: int
) -> tuple[float, float]:
    """Server RSS growth (MB) while ``count`` streams (half gRPC, half SSE) watch a broadcast
    scheduled an hour ahead, and the server's CPU seconds per second over the profile's
    ``idle_cpu_window`` of their waiting; then it is cancelled and every stream ends."""
    send_at = datetime.now(UTC) + timedelta(hours=1)
    body = {"message": "later", "user_ids": [1], "send_at": send_at.isoformat()}
    broadcast_id = await client.send_raw(json.dumps(body).encode())
    assert cluster.server is not None
    server = cluster.server.pid
    before = resident_mb(server)
    folder = bench.folder("watchers")
    per_process = 250
    async with AsyncExitStack() as stack:
        children: list[Child] = []
        for transport in ("grpc", "sse"):
            for start in range(0, count // 2, per_process):
                size = min(per_process, count // 2 - start)
                out = folder / f"idle-{transport}-{start}.json"
                args = [sys.executable, "-m", "bench.watchers", "--target", cluster.grpc_target]
                args += ["--token", API_TOKEN, "--count", str(size), "--out", str(out)]
                if transport == "sse":
                    args += ["--sse", cluster.http_url]
                name = f"idle-{transport}-{start}"
                children.append(
                    await stack.enter_async_context(
                        spawn(args, name=name, folder=folder, pipe_stdout=True, pipe_stdin=True)
                    )
                )
        for child in children:
            if await read_line(child) != "ready":
                raise child.failure("did not print 'ready'")
            assert child.proc.stdin is not None
            child.proc.stdin.write(f"{broadcast_id}\n".encode())
        await client.wait_watchers(count, within=120)
        grown = resident_mb(server) - before
        window = bench.profile.idle_cpu_window
        await asyncio.sleep(window)  # the openings' own work done
        cpu_before, started = cpu_seconds(server), time.monotonic()
        await asyncio.sleep(window)
        idle_cpu = (cpu_seconds(server) - cpu_before) / (time.monotonic() - started)
        await client.cancel(broadcast_id)
        for child in children:
            await read_line(child, within=120)
    return grown, idle_cpu


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
        for transport in ("grpc", "sse"):
            for i, size in enumerate(sizes):
                out = folder / f"watchers-{transport}-{i}.json"
                args = [sys.executable, "-m", "bench.watchers", "--target", cluster.grpc_target]
                args += ["--token", API_TOKEN, "--count", str(size), "--out", str(out)]
                if transport == "sse":
                    args += ["--sse", cluster.http_url]
                else:
                    args += ["--max-batch", str(MAX_BATCH)]
                child = await stack.enter_async_context(
                    spawn(
                        args,
                        name=f"watchers-{transport}-{i}",
                        folder=folder,
                        pipe_stdout=True,
                        pipe_stdin=True,
                    )
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
        merged: dict[str, Any] = {
            "watchers": [],
            "lags_ms": [],
            "lags_ms_grpc": [],
            "lags_ms_sse": [],
        }
        for _, out in clients:
            data = json.loads(out.read_text(encoding="utf-8"))
            merged["watchers"] += data["watchers"]
            merged["lags_ms"] += data["lags_ms"]
            transport = "sse" if "-sse-" in out.name else "grpc"
            merged[f"lags_ms_{transport}"] += data["lags_ms"]
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
