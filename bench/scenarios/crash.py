"""Scenario 6: what a ``kill -9`` costs, the service against the aiogram loop.

The service (several workers, ``nats.ack_wait`` short so a dead worker's jobs come back
soon) sends a broadcast once undisturbed and once while a worker is killed with SIGKILL every
few seconds and a new one started in its place. The aiogram loop sends the same recipients
once undisturbed and once killed as many times, at the same interval from each start; it
keeps no state, so each restart begins again from the first recipient.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

from bench.analysis import Deliveries, analyse
from bench.children import Cluster, PeerProcess, ServiceConfig
from bench.client import FINAL, ServiceClient, finished_at
from bench.profiles import Bench
from bench.report import Chart, Section, Series, Table, emit, fmt, progress, verdict
from bench.runs import SERVICE_ROLES, RunResult, peer_command, peer_run, service_run

PEER = "aiogram-sleep"
CONCURRENCY = 32


async def crash(bench: Bench) -> Section:
    profile = bench.profile
    rate = profile.crash_rate
    count = profile.crash_recipients
    every = profile.crash_every
    recipients = list(range(1, count + 1))
    section = Section(
        key="6",
        title="Crash cost",
        setup=(
            f"A broadcast to {fmt(count)} recipients at {rate}/s (the simulator's limit and "
            f"`telegram.rate_limit`), {profile.crash_workers} workers, "
            f"`worker.concurrency` = {CONCURRENCY}, `nats.ack_wait` = "
            f"{profile.crash_ack_wait:g} s, SQLite. *Crashes*: every {every:g} s (at most "
            f"{profile.crash_kills} times) the oldest running worker gets `kill -9`, unless "
            "it is the last one running, and a new worker is started in its place (it needs "
            "about a second to start before it sends). docs/design.md bounds duplicates "
            "by `worker.concurrency` per killed worker. The peer is the aiogram loop with "
            f"sleeps at {rate}/s, killed as many times, {every:g} s after each of its starts, "
            "and started again (from the first recipient: it keeps no state). Times run from "
            "the request (the peer: its first send) to the last recipient's outcome."
        ),
    )
    await bench.sim.set_limits(bot=rate)
    config = ServiceConfig(
        rate_limit=rate, concurrency=CONCURRENCY, ack_wait=profile.crash_ack_wait
    )
    within = count / rate * 6 + 120
    async with (
        Cluster.start(
            bench.folder("crash"), bench.sim, config, workers=profile.crash_workers
        ) as cluster,
        ServiceClient.connect(cluster.http_url, cluster.grpc_target) as client,
    ):
        progress("6. the service, no crashes")
        calm = await service_run(bench, cluster, client, recipients, label="service", within=within)
        emit("6", "service no crashes", calm.numbers(rate))
        progress(f"6. the service, a worker killed every {every:g} s")
        crashed, kills = await _service_with_kills(bench, cluster, client, recipients, within)
        numbers = crashed.numbers(rate)
        numbers |= {"kills": len(kills), "kill_times_s": [round(k, 2) for k in kills]}
        emit("6", "service with kills", numbers)
    progress("6. the aiogram loop, no crashes")
    peer_calm = await peer_run(bench, PEER, recipients, rate=rate, within=within)
    emit("6", "aiogram loop no crashes", peer_calm.numbers(rate))
    progress(f"6. the aiogram loop, killed {len(kills)} times")
    peer_deliveries, peer_start, peer_end, peer_kills = await _peer_with_kills(
        bench, recipients, rate, len(kills), within
    )
    peer_total = peer_end - peer_start
    emit(
        "6",
        "aiogram loop with kills",
        {**peer_deliveries.to_json(rate), "total_s": round(peer_total, 3), "kills": peer_kills},
    )
    bound = CONCURRENCY * len(kills)
    rows = [
        _row("service", "0", calm.deliveries, calm.total_seconds, calm.total_seconds, "-"),
        _row(
            "service",
            str(len(kills)),
            crashed.deliveries,
            crashed.total_seconds,
            calm.total_seconds,
            f"{fmt(bound)} ({CONCURRENCY} x {len(kills)})",
        ),
        _row(
            "aiogram loop",
            "0",
            peer_calm.deliveries,
            peer_calm.total_seconds,
            peer_calm.total_seconds,
            "-",
        ),
        _row(
            "aiogram loop",
            str(peer_kills),
            peer_deliveries,
            peer_total,
            peer_calm.total_seconds,
            "none",
        ),
    ]
    section.tables.append(
        Table(
            columns=(
                "sender",
                "kills",
                "recipients lost",
                "duplicates",
                "duplicate bound",
                "total (s)",
                "time / no-crash time",
            ),
            rows=rows,
        )
    )
    d = crashed.deliveries
    section.findings.append(
        f"Service, {len(kills)} kills: recipients lost {fmt(d.lost)} (must be 0: "
        f"{verdict(d.lost == 0)}); duplicates {fmt(d.duplicates)} against the bound "
        f"{fmt(bound)} ({verdict(d.duplicates <= bound)})."
    )
    ratio = crashed.total_seconds / calm.total_seconds if calm.total_seconds > 0 else None
    peer_ratio = peer_total / peer_calm.total_seconds if peer_calm.total_seconds > 0 else None
    section.findings.append(
        f"Time with kills over time without: the service {fmt(ratio, 2)}, the aiogram loop "
        f"{fmt(peer_ratio, 2)}; the loop, restarted from its first recipient each time, sent "
        f"{fmt(peer_deliveries.duplicates)} duplicates for {fmt(peer_kills)} kills."
    )
    section.charts.append(
        Chart(
            name="crash_progress",
            title="Recipients reached over time, with and without kill -9",
            kind="lines",
            xlabel="seconds since the request (the peer: since its first start)",
            ylabel="distinct recipients accepted",
            series=[
                _progress("service, no crashes", calm.deliveries, calm.requested_at),
                _progress(f"service, {len(kills)} kills", d, crashed.requested_at),
                _progress("aiogram loop, no crashes", peer_calm.deliveries, peer_calm.requested_at),
                _progress(f"aiogram loop, {peer_kills} kills", peer_deliveries, peer_start),
            ],
            marks=kills,
            marks_label="service worker killed",
        )
    )
    return section


def _row(
    sender: str,
    kills: str,
    d: Deliveries,
    total: float,
    calm_total: float,
    bound: str,
) -> list[str]:
    return [
        sender,
        kills,
        fmt(d.lost),
        fmt(d.duplicates),
        bound,
        fmt(total, 1),
        fmt(total / calm_total if calm_total > 0 else None, 2),
    ]


def _progress(label: str, d: Deliveries, origin: float) -> Series:
    """Distinct recipients reached, over seconds since ``origin``."""
    xs = [at - origin for at in d.first_times]
    return Series(label=label, xs=xs, ys=[float(i + 1) for i in range(len(xs))])


async def _service_with_kills(
    bench: Bench,
    cluster: Cluster,
    client: ServiceClient,
    recipients: Sequence[int],
    within: float,
) -> tuple[RunResult, list[float]]:
    every = bench.profile.crash_every
    most = bench.profile.crash_kills
    await bench.sim.reset()
    kills: list[float] = []
    starting: list[asyncio.Task[None]] = []

    async def replace() -> None:
        worker = await cluster.start_worker()
        bench.meter.track("worker", worker.pid)

    for worker in cluster.workers:
        bench.meter.track("worker", worker.pid)
    assert cluster.server is not None
    bench.meter.track("server", cluster.server.pid, children_as="nats-server")
    try:
        async with bench.meter.measuring() as window:
            requested_at = time.time()
            broadcast_id = await client.send_rest(recipients)
            next_kill = time.monotonic() + every
            async with asyncio.timeout(within):
                while (state := await client.get(broadcast_id))["status"] not in FINAL:
                    live = cluster.live_workers
                    if time.monotonic() >= next_kill and len(kills) < most:
                        next_kill += every
                        if len(live) >= 2:  # never the last one running
                            await live[0].kill()
                            kills.append(time.time() - requested_at)
                            starting.append(asyncio.create_task(replace()))
                    await asyncio.sleep(0.1)
    finally:
        for task in starting:
            with contextlib.suppress(Exception):
                await task
    calls = await bench.sim.calls()
    result = RunResult(
        label="service with kills",
        deliveries=analyse(calls, recipients, requested_at=requested_at),
        window=window,
        requested_at=requested_at,
        done_at=finished_at(state) or time.time(),
        cpu_roles=SERVICE_ROLES,
    )
    return result, kills


async def _peer_with_kills(
    bench: Bench, recipients: Sequence[int], rate: float, kills: int, within: float
) -> tuple[Deliveries, float, float, int]:
    """What the simulator saw, the first start, the end, and the kills made."""
    every = bench.profile.crash_every
    folder = bench.folder("crash-peer")
    command = peer_command(PEER, recipients, rate=rate)
    await bench.sim.reset()
    first_go: float | None = None
    made = 0
    done_at = 0.0
    async with asyncio.timeout(within * (kills + 2)):
        while True:
            name = f"peer-crash-{made}"
            async with PeerProcess.start(folder, name, bench.sim, "aiogram") as peer:
                await peer.go(command)
                first_go = first_go or time.time()
                if made < kills:
                    await asyncio.sleep(every)
                    if peer.child.running:
                        await peer.child.kill()
                        made += 1
                        continue
                said = await peer.result(within=within)
                done_at = float(said["finished_at"])
                break
    calls = await bench.sim.calls()
    assert first_go is not None
    deliveries = analyse(calls, recipients, requested_at=first_go)
    return deliveries, first_go, done_at, made
