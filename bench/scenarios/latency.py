"""Scenario 7: how long ``SendMessage`` takes to answer, over gRPC and REST, under load.

A server with no workers (so the machine's cores serve the API, the database and NATS; the
dispatcher still publishes every broadcast's jobs) answers a fixed number of requests from
several concurrent callers: one recipient each, then 10,000 recipients each (the same ids
every time, known users after the first request). Then the same again beside a broadcast
sending at 1000/s through one worker, as issue 14 measures it. For each request its broadcast's
dispatch lag is read from the server's log: from its ``broadcast created`` line (written just
before the answer) to its ``broadcast dispatched`` (every job acknowledged by JetStream).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

from bench.analysis import percentile
from bench.children import Child, Cluster, ServiceConfig
from bench.client import ServiceClient, send_body
from bench.profiles import Bench
from bench.report import Chart, Section, Series, Table, Target, emit, fmt, progress
from bench.runs import track_cluster

ALONE = "server alone"
BESIDE = "beside a broadcast at 1000/s"
BACKGROUND_RATE = 1000


async def latency(bench: Bench) -> Section:
    profile = bench.profile
    big = profile.latency_big_size
    concurrency = profile.latency_concurrency
    section = Section(
        key="7",
        title="API latency",
        setup=(
            f"`SendMessage` from {concurrency} concurrent callers (one gRPC channel, one "
            f"HTTP connection pool): {fmt(profile.latency_small_requests)} requests with one "
            f"recipient each (a new id each time), then {fmt(profile.latency_big_requests)} "
            f"with {fmt(big)} recipients each (the same ids each time), over gRPC and over "
            "REST (`POST /send-message`): first with `tgbroadcast server` alone, then beside a "
            f"broadcast of {fmt(200 * profile.latency_small_requests)} recipients sending at "
            "1000/s through one worker (measured once all its jobs are published); SQLite, "
            "embedded NATS. Latency is from the call to its answer (202 / OK), measured by "
            "the caller."
        ),
    )
    rows: list[list[str]] = []
    categories: list[str] = []
    p50s: list[float | None] = []
    p99s: list[float | None] = []
    next_id = iter(range(10**9, 2 * 10**9))
    big_ids = list(range(1, big + 1))
    big_body = send_body(big_ids)

    async def measure(client: ServiceClient, server: Child, beside: str) -> None:
        plans: list[tuple[str, int, int, Callable[[], Awaitable[int]]]] = [
            (
                "gRPC",
                1,
                profile.latency_small_requests,
                lambda: client.send_grpc([next(next_id)]),
            ),
            (
                "REST",
                1,
                profile.latency_small_requests,
                lambda: client.send_rest([next(next_id)]),
            ),
            ("gRPC", big, profile.latency_big_requests, lambda: client.send_grpc(big_ids)),
            ("REST", big, profile.latency_big_requests, lambda: client.send_raw(big_body)),
        ]
        for transport, size, requests, call in plans:
            progress(f"7. {transport}, {requests} requests of {size} recipient(s), {beside}")
            ids: list[int] = []
            async with bench.meter.measuring() as window:
                began = time.perf_counter()
                latencies = await timed_load(_recording(call, ids), requests, concurrency)
                elapsed = time.perf_counter() - began
            lags = await dispatch_lags(server, ids)
            p50 = percentile(latencies, 0.5)
            p99 = percentile(latencies, 0.99)
            server_cpu = window.cpu("server", "nats-server")
            label = f"{transport} recipients={size}" + ("" if beside == ALONE else " " + BESIDE)
            emit(
                "7",
                label,
                {
                    "requests": requests,
                    "concurrency": concurrency,
                    "beside": beside,
                    "p50_ms": None if p50 is None else round(p50 * 1000, 2),
                    "p99_ms": None if p99 is None else round(p99 * 1000, 2),
                    "max_ms": round(max(latencies) * 1000, 2),
                    "requests_per_s": round(requests / elapsed, 2),
                    "server_cpu_s": None if server_cpu is None else round(server_cpu, 3),
                    "dispatch_lag_p50_ms": _ms(percentile(lags, 0.5)),
                    "dispatch_lag_max_ms": _ms(max(lags, default=None)),
                    "undispatched": requests - len(lags),
                },
            )
            rows.append(
                [
                    beside,
                    transport,
                    fmt(size),
                    fmt(requests),
                    f"{fmt(p50 and p50 * 1000, 1)} / {fmt(p99 and p99 * 1000, 1)}",
                    fmt(max(latencies) * 1000, 1),
                    fmt(requests / elapsed, 1),
                    fmt(None if server_cpu is None else server_cpu * 1000 / requests, 1),
                    f"{fmt(_ms(percentile(lags, 0.5)))} / {fmt(_ms(max(lags, default=None)))}"
                    + ("" if len(lags) == requests else f" ({requests - len(lags)} not in 60 s)"),
                ]
            )
            section.findings.append(
                f"{transport}, {fmt(size)} recipient(s), {beside}: p50 "
                f"{fmt(p50 and p50 * 1000, 1)} ms, p99 {fmt(p99 and p99 * 1000, 1)} ms."
            )
            categories.append(
                f"{transport} {size:,}\n{'alone' if beside == ALONE else 'beside 1000/s'}"
            )
            if beside == BESIDE:
                section.targets.append(_target(transport, size, p50, p99))
            p50s.append(None if p50 is None else p50 * 1000)
            p99s.append(None if p99 is None else p99 * 1000)

    async with (
        Cluster.start(bench.folder("latency"), bench.sim, ServiceConfig()) as cluster,
        ServiceClient.connect(cluster.http_url, cluster.grpc_target) as client,
    ):
        track_cluster(bench.meter, cluster)
        assert cluster.server is not None
        await measure(client, cluster.server, ALONE)
    # The same beside a broadcast sending at 1000/s (one worker; the server dispatches it,
    # records nothing itself, and answers the API meanwhile).
    await bench.sim.set_limits(bot=BACKGROUND_RATE)
    config = ServiceConfig(rate_limit=BACKGROUND_RATE)
    async with (
        Cluster.start(bench.folder("latency-busy"), bench.sim, config, workers=1) as cluster,
        ServiceClient.connect(cluster.http_url, cluster.grpc_target) as client,
    ):
        track_cluster(bench.meter, cluster)
        # Longer than the measurement (two minutes at full size): still sending at its end.
        background = list(range(5 * 10**8, 5 * 10**8 + 200 * profile.latency_small_requests))
        broadcast_id = await client.send_grpc(background)
        await client.wait_sending(broadcast_id, within=60)
        assert cluster.server is not None
        # Once all its jobs are published: both transports then meet the same steady state
        # (the dispatch's first second on two busy cores is not "beside a broadcast at
        # 1000/s", and it fell on whichever transport went first).
        if not await dispatch_lags(cluster.server, [broadcast_id]):
            raise RuntimeError(f"the background broadcast {broadcast_id} was not dispatched")
        await measure(client, cluster.server, BESIDE)
    section.tables.append(
        Table(
            columns=(
                "beside",
                "transport",
                "recipients per request",
                "requests",
                "p50 / p99 (ms)",
                "max (ms)",
                "requests / s",
                "server CPU ms / request",
                "dispatch lag p50 / max (ms)",
            ),
            rows=rows,
        )
    )
    section.charts.append(
        Chart(
            name="api_latency",
            title=f"SendMessage latency, {concurrency} concurrent callers",
            kind="bars",
            xlabel="",
            ylabel="milliseconds (log scale)",
            categories=categories,
            series=[
                Series(label="p50", xs=[], ys=p50s),
                Series(label="p99", xs=[], ys=p99s),
            ],
            log_y=True,
        )
    )
    return section


_LOGGED = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO \S+ broadcast (created|dispatched) "
    r"broadcast_id=(\d+)",
    re.MULTILINE,
)


def _recording(call: Callable[[], Awaitable[int]], ids: list[int]) -> Callable[[], Awaitable[int]]:
    """``call``, keeping each broadcast id it answers in ``ids``."""

    async def recorded() -> int:
        broadcast_id = await call()
        ids.append(broadcast_id)
        return broadcast_id

    return recorded


async def dispatch_lags(server: Child, ids: list[int], *, within: float = 60.0) -> list[float]:
    """Seconds from each broadcast's ``broadcast created`` log line to its ``broadcast
    dispatched``, once all are dispatched or ``within`` seconds have passed (those not
    dispatched by then are left out)."""
    deadline = time.monotonic() + within
    while True:
        created: dict[int, datetime] = {}
        lags: list[float] = []
        wanted = set(ids)
        for at, what, number in _LOGGED.findall(server.log_text()):
            broadcast_id = int(number)
            if broadcast_id not in wanted:
                continue
            stamp = datetime.strptime(at, "%Y-%m-%d %H:%M:%S,%f")
            if what == "created":
                created[broadcast_id] = stamp
            elif broadcast_id in created:
                lags.append((stamp - created.pop(broadcast_id)).total_seconds())
                wanted.discard(broadcast_id)
        if not wanted or time.monotonic() > deadline:
            return lags
        await asyncio.sleep(0.2)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


SMALL_BEFORE = {"gRPC": "8-10 / 839 (alone)", "REST": "8-10 / 945 (alone)"}
"""78ce160's one-recipient p50 / p99 (ms), server alone, as issue #14 quoted them."""


def _target(transport: str, size: int, p50: float | None, p99: float | None) -> Target:
    """#14.2, beside a broadcast at 1000/s: one recipient p50 ≤ 5 ms and p99 ≤ 50 ms, a big
    request p99 ≤ 250 ms."""
    if size == 1:
        return Target(
            item="#14.2 API latency",
            measured=f"{transport} SendMessage, 1 recipient, p50 / p99 (ms), beside 1000/s",
            goal="≤ 5 / ≤ 50",
            before=SMALL_BEFORE[transport],
            now=f"{fmt(p50 and p50 * 1000, 1)} / {fmt(p99 and p99 * 1000, 1)}",
            met=None if p50 is None or p99 is None else p50 <= 0.005 and p99 <= 0.05,
        )
    return Target(
        item="#14.2 API latency",
        measured=f"{transport} SendMessage, {size:,} recipients, p99 (ms), beside 1000/s",
        goal="≤ 250",
        before="648-940 (alone)",
        now=fmt(p99 and p99 * 1000, 1),
        met=None if p99 is None else p99 <= 0.25,
    )


async def timed_load(
    call: Callable[[], Awaitable[object]], requests: int, concurrency: int
) -> list[float]:
    """``requests`` calls, ``concurrency`` at a time; each one's seconds."""
    latencies: list[float] = []
    remaining = iter(range(requests))

    async def caller() -> None:
        for _ in remaining:
            began = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - began)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return latencies
