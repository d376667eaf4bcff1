"""Scenario 4: one broadcast to a million recipients.

Per database: ``python -m bench.accept`` times the store alone (``Store.create_broadcast``
for new and for known users); then a real server with two workers takes the same size of
broadcast over HTTP (request → 202), fans it out to NATS and sends for a while with flood
control off, while the server's, nats-server's and workers' memory is sampled. The size of
the database is read before the broadcast, at the 202 and after the sending window.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bench.children import Child, Cluster, ServiceConfig, read_line, spawn
from bench.client import ServiceClient, send_body
from bench.databases import database_dsn, size_bytes
from bench.meter import Window
from bench.profiles import Bench
from bench.report import Chart, Section, Series, Table, Target, emit, fmt, progress
from bench.runs import track_cluster
from bench.scenarios.overhead import UNLIMITED
from bench.scenarios.startup import startup

MB = 1024 * 1024
ACCEPT_GOALS = {"sqlite": 2.5, "postgres": 4.0, "mariadb": 6.0}
"""#14.5: seconds from the request of a million recipients to its 202, per database."""
ACCEPT_BEFORE = {"sqlite": "3.9", "postgres": "6.4"}
RSS_GOAL = 250.0
"""#14.5: the server's peak resident memory (MB) while it takes a million recipients."""
FANOUT_GRACE = 150.0
"""Seconds the sending window is stretched, at most, to see the fan-out finish."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleRun:
    backend: str
    accept_seconds: float
    fanout_seconds: float | None
    sent: int
    send_seconds: float
    size_before: int
    size_accepted: int
    size_after: int
    window: Window

    def per_million_mb(self, recipients: int) -> float:
        return (self.size_accepted - self.size_before) / MB * 1_000_000 / recipients


async def scale(bench: Bench) -> Section:
    profile = bench.profile
    count = profile.scale_recipients
    section = Section(
        key="4",
        title="Scale of a broadcast",
        setup=(
            f"A broadcast to {fmt(count)} distinct, random, Telegram-like ids (none a known "
            "user yet, so each also becomes a user row). *Store only* is `python -m "
            "bench.accept` (`Store.create_broadcast`, new users, then again with every "
            "recipient known). *Request → 202* is the same size of broadcast as one "
            "`POST /send-message` to a running server; then the dispatcher fans it out "
            "(jobs of 100 recipients on NATS) and two workers send with flood control off "
            f"for {profile.scale_send_seconds:g} s, or until the fan-out is done, while psutil "
            "samples memory. The database "
            "size is SQLite's `page_count * page_size`, PostgreSQL's `pg_database_size` or "
            "MariaDB's data and index lengths in `information_schema.tables`; "
            "*per million deliveries* is its growth from before the request to the 202, scaled to "
            "1,000,000 recipients."
        ),
    )
    await bench.sim.set_limits()
    rows = []
    timelines: list[Series] = []
    for backend in profile.scale_backends:
        stored = await _accept_script(bench, backend, count)
        async with database_dsn(backend) as dsn:
            if dsn is None:
                section.findings.append(f"{backend}: not measured (the server is not usable).")
                continue
            run = await _one_broadcast(bench, backend, dsn, count)
        usage = run.window.usage
        server_rss = usage["server"].peak_rss_mb if "server" in usage else None
        section.targets += [
            Target(
                item="#14.5 scale",
                measured=f"{fmt(count)} recipients: request → 202 (s), {backend}",
                goal=f"≤ {ACCEPT_GOALS.get(backend, 0):g}",
                before=ACCEPT_BEFORE.get(backend, "-"),
                now=fmt(run.accept_seconds, 1),
                met=run.accept_seconds <= ACCEPT_GOALS.get(backend, 0),
            ),
            Target(
                item="#14.5 scale",
                measured=f"server peak RSS meanwhile (MB), {backend}",
                goal=f"≤ {RSS_GOAL:g}",
                before="373" if backend == "sqlite" else "-",
                now=fmt(server_rss, 0),
                met=None if server_rss is None else server_rss <= RSS_GOAL,
            ),
        ]
        section.findings.append(
            f"{backend}: {fmt(count)} recipients accepted in {fmt(run.accept_seconds, 1)} s "
            f"(request → 202); {fmt(run.per_million_mb(count), 0)} MB of database per million "
            "deliveries; peak RSS "
            + ", ".join(
                f"{role} {fmt(usage[role].peak_rss_mb, 0)} MB"
                for role in ("server", "worker")
                if role in usage
            )
            + "."
        )
        rows.append(
            [
                backend,
                fmt(_number(stored, "new"), 1),
                fmt(_number(stored, "existing"), 1),
                fmt(run.accept_seconds, 1),
                fmt(run.fanout_seconds, 1) if run.fanout_seconds is not None else "not done",
                f"{fmt(run.sent)} in {run.send_seconds:.0f} s",
                " / ".join(
                    fmt(usage[role].peak_rss_mb, 0) if role in usage else "n/a"
                    for role in ("server", "nats-server", "worker")
                ),
                fmt(run.size_accepted / MB, 0),
                fmt(run.per_million_mb(count), 0),
                fmt(run.size_after / MB, 0),
            ]
        )
        for role in ("server", "worker", "nats-server"):
            points = run.window.rss_timeline.get(role, [])
            if points:
                timelines.append(
                    Series(
                        label=f"{backend}: {role}" + (" (all)" if role == "worker" else ""),
                        xs=[x for x, _ in points],
                        ys=[y for _, y in points],
                    )
                )
    section.tables.append(
        Table(
            columns=(
                "database",
                "store only, new users (s)",
                "store only, known users (s)",
                "request → 202 (s)",
                "fan-out done after the 202 (s)",
                "sent in the window",
                "peak RSS MB: server / nats-server / one worker",
                "database after the 202 (MB)",
                "MB per million deliveries",
                "database after sending (MB)",
            ),
            rows=rows,
        )
    )
    table, findings, targets = await startup(bench)
    section.tables.append(table)
    section.findings.extend(findings)
    section.targets.extend(targets)
    if timelines:
        section.charts.append(
            Chart(
                name="scale_memory",
                title=f"Memory during a {count:,}-recipient broadcast (request at 0 s)",
                kind="lines",
                xlabel="seconds since the request",
                ylabel="resident memory (MB)",
                series=timelines,
            )
        )
    return section


def _number(data: dict[str, Any] | None, key: str) -> float | None:
    if data is None or key not in data:
        return None
    return float(data[key])


async def _accept_script(bench: Bench, backend: str, count: int) -> dict[str, Any] | None:
    """``python -m bench.accept``'s JSON line, or ``None`` if it failed."""
    progress(f"4. bench.accept on {backend}, {count:,} recipients")
    args = [sys.executable, "-m", "bench.accept", "--backend", backend]
    args += ["--recipients", str(count)]
    folder = bench.folder("scale")
    async with spawn(args, name=f"accept-{backend}", folder=folder, pipe_stdout=True) as child:
        try:
            line = await read_line(child, within=count / 1_000_000 * 900 + 60)
            data: dict[str, Any] = json.loads(line)
        except (RuntimeError, ValueError) as exc:
            progress(f"bench.accept failed: {exc}")
            emit("4", f"{backend} bench.accept", {"error": str(exc)})
            return None
    emit("4", f"{backend} bench.accept", data)
    return data


def recipient_ids(count: int) -> list[int]:
    """``count`` distinct random ids, as a request would carry them."""
    return random.Random(4).sample(range(1, 10**10), count)


async def _one_broadcast(bench: Bench, backend: str, dsn: str, count: int) -> ScaleRun:
    ids = recipient_ids(count)
    config = ServiceConfig(rate_limit=UNLIMITED, paid_rate_limit=UNLIMITED, database_dsn=dsn)
    folder = bench.folder(f"scale-{backend}")
    data_dir = folder / "data"
    seconds = bench.profile.scale_send_seconds
    await bench.sim.reset()
    async with (
        Cluster.start(folder, bench.sim, config, workers=2) as cluster,
        ServiceClient.connect(cluster.http_url, cluster.grpc_target) as client,
    ):
        track_cluster(bench.meter, cluster)
        size_before = await size_bytes(dsn, data_dir)
        progress(f"4. {backend}: one request with {count:,} recipients")
        async with bench.meter.measuring() as window:
            body = send_body(ids)
            requested_at = time.time()
            broadcast_id = await client.send_raw(body)
            accepted_at = time.time()
            size_accepted = await size_bytes(dsn, data_dir)
            assert cluster.server is not None
            server = cluster.server
            while (elapsed := time.time() - accepted_at) < seconds + FANOUT_GRACE:
                if elapsed >= seconds and _dispatched_at(server, broadcast_id) is not None:
                    break
                await asyncio.sleep(1.0)
            state = await client.get(broadcast_id)
            sent_at = time.time()
        size_after = await size_bytes(dsn, data_dir)
        dispatched = _dispatched_at(server, broadcast_id)
    run = ScaleRun(
        backend=backend,
        accept_seconds=accepted_at - requested_at,
        fanout_seconds=None if dispatched is None else dispatched - accepted_at,
        sent=int(state["sent"]) + int(state["failed"]),
        send_seconds=sent_at - accepted_at,
        size_before=size_before,
        size_accepted=size_accepted,
        size_after=size_after,
        window=window,
    )
    emit(
        "4",
        f"{backend} request",
        {
            "recipients": count,
            "accept_s": round(run.accept_seconds, 3),
            "fanout_s": None if run.fanout_seconds is None else round(run.fanout_seconds, 3),
            "sent": run.sent,
            "send_window_s": round(run.send_seconds, 3),
            "db_bytes_before": size_before,
            "db_bytes_accepted": size_accepted,
            "db_bytes_after": size_after,
            "db_mb_per_million": round(run.per_million_mb(count), 1),
            "processes": {
                role: {"cpu_s": round(u.cpu_seconds, 3), "peak_rss_mb": round(u.peak_rss_mb, 1)}
                for role, u in window.usage.items()
            },
        },
    )
    return run


def _dispatched_at(server: Child, broadcast_id: int) -> float | None:
    """When the server logged the broadcast's fan-out done (its log's local time)."""
    return dispatched_time(server.log_text().splitlines(), broadcast_id)


def dispatched_time(lines: Sequence[str], broadcast_id: int) -> float | None:
    marker = f"broadcast dispatched broadcast_id={broadcast_id} "
    for line in lines:
        if marker in line:
            stamp = " ".join(line.split(" ", 2)[:2])
            return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None
