"""Part of scenario 4: how soon a broadcast starts, and how soon a worker is ready.

* *202 → first Telegram call*: one-recipient broadcasts (a new id each) sent one at a time to
  a server with one warm worker (SQLite, embedded NATS); the simulator's time of the call
  minus the caller's time of the 202. Both clocks are this machine's wall clock.
* *A worker's cold start*: from spawning ``tgbroadcast worker`` beside a running server to its
  "worker started" line (connected to NATS and the database, consuming), each in a new
  process; and, for where that time goes, aiogram in a new interpreter: ``import aiogram`` as
  usual (every model built) and as a worker loads it (``import_aiogram()``, then the models its
  sends use built: :mod:`tgbroadcast.worker.aiogram_models`).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from dataclasses import dataclass

from bench.children import Cluster, ServiceConfig, SimulatorProcess
from bench.client import ServiceClient
from bench.profiles import Bench
from bench.report import Table, Target, emit, fmt, progress, verdict
from bench.runs import track_cluster

FIRST_CALL_GOAL = 0.1
"""#14.5: seconds from the 202 to the broadcast's first Telegram call, workers warm."""
COLD_START_GOAL = 2.0
"""#14.5: seconds from starting a worker to it consuming."""
CALL_TIMEOUT = 30.0
FIRST_IDS = 7 * 10**9


@dataclass(frozen=True, slots=True, kw_only=True)
class Startup:
    first_calls: list[float]
    """Seconds from each 202 to its recipient's ``sendMessage`` at the simulator."""
    cold_starts: list[float]
    """Seconds from spawning a worker to its "worker started" line."""
    aiogram_imports: list[float]
    """Seconds ``import aiogram`` took in a new interpreter."""
    worker_imports: list[float]
    """Seconds aiogram took in a new interpreter as a worker loads it, its models built."""


async def startup(bench: Bench) -> tuple[Table, list[str], list[Target]]:
    """The start-up table of scenario 4, its findings and #14's targets."""
    rounds = bench.profile.startup_first_calls
    starts = bench.profile.startup_cold_starts
    await bench.sim.reset()
    await bench.sim.set_limits()
    config = ServiceConfig()
    async with (
        Cluster.start(bench.folder("startup"), bench.sim, config, workers=1) as cluster,
        ServiceClient.connect(cluster.http_url, cluster.grpc_target) as client,
    ):
        track_cluster(bench.meter, cluster)
        progress(f"4. 202 → first Telegram call, {rounds} one-recipient broadcasts")
        await _first_call(client, bench.sim, FIRST_IDS - 1)  # warms the worker's paths
        first_calls = [await _first_call(client, bench.sim, FIRST_IDS + n) for n in range(rounds)]
        progress(f"4. a worker's cold start, {starts} times")
        cold_starts: list[float] = []
        for _ in range(starts):
            began = time.perf_counter()
            worker = await cluster.start_worker()
            try:
                cold_starts.append(time.perf_counter() - began)
            finally:
                await worker.stop()
    imports = [await _aiogram_import(_IMPORT) for _ in range(starts)]
    loads = [await _aiogram_import(_WORKER_LOAD) for _ in range(starts)]
    run = Startup(
        first_calls=first_calls,
        cold_starts=cold_starts,
        aiogram_imports=imports,
        worker_imports=loads,
    )
    emit(
        "4",
        "startup",
        {
            "first_call_s": [round(s, 4) for s in run.first_calls],
            "cold_start_s": [round(s, 3) for s in run.cold_starts],
            "aiogram_import_s": [round(s, 3) for s in run.aiogram_imports],
            "worker_aiogram_s": [round(s, 3) for s in run.worker_imports],
        },
    )
    return _table(run), _findings(run), _targets(run)


async def _first_call(client: ServiceClient, sim: SimulatorProcess, user_id: int) -> float:
    known = await sim.calls()
    since = known[-1].seq if known else 0
    await client.send_grpc([user_id])
    accepted_at = time.time()
    async with asyncio.timeout(CALL_TIMEOUT):
        while True:
            calls = [c for c in await sim.calls(since=since) if c.chat_id == user_id]
            if calls:
                return calls[0].at - accepted_at
            await asyncio.sleep(0.05)


_IMPORT = "import aiogram"
_WORKER_LOAD = (
    "from tgbroadcast.worker.aiogram_loading import import_aiogram; import_aiogram(); "
    "from tgbroadcast.worker.aiogram_models import build_models; build_models()"
)


async def _aiogram_import(statements: str) -> float:
    """Seconds ``statements`` take in a new interpreter."""
    code = f"import time; t = time.perf_counter(); {statements}; print(time.perf_counter() - t)"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    return float(out.decode().strip())


def _table(run: Startup) -> Table:
    def row(what: str, values: list[float], target: str) -> list[str]:
        ms = [v * 1000 for v in values]
        return [
            what,
            fmt(len(ms)),
            fmt(statistics.median(ms), 0),
            fmt(max(ms), 0),
            target,
        ]

    return Table(
        columns=("measured", "times", "median (ms)", "max (ms)", "target (ms)"),
        rows=[
            row("202 → first Telegram call, warm worker", run.first_calls, "≤ 100"),
            row("worker cold start (spawn → consuming)", run.cold_starts, "≤ 2,000"),
            row(
                "aiogram as a worker loads it, its models built (with its content modules)",
                run.worker_imports,
                "",
            ),
            row("`import aiogram` as usual, every model built", run.aiogram_imports, ""),
        ],
    )


def _targets(run: Startup) -> list[Target]:
    worst_call = max(run.first_calls) * 1000
    worst_start = max(run.cold_starts)
    return [
        Target(
            item="#14.5 scale",
            measured="202 → first Telegram call (ms), warm worker, max",
            goal=f"≤ {FIRST_CALL_GOAL * 1000:g}",
            before="-",
            now=fmt(worst_call, 0),
            met=worst_call <= FIRST_CALL_GOAL * 1000,
        ),
        Target(
            item="#14.5 scale",
            measured="a worker's cold start (s), max",
            goal=f"≤ {COLD_START_GOAL:g}",
            before="-",
            now=fmt(worst_start, 2),
            met=worst_start <= COLD_START_GOAL,
        ),
    ]


def _findings(run: Startup) -> list[str]:
    first = statistics.median(run.first_calls) * 1000
    worst = max(run.first_calls) * 1000
    cold = statistics.median(run.cold_starts)
    aiogram = statistics.median(run.aiogram_imports)
    loaded = statistics.median(run.worker_imports)
    return [
        f"202 → first Telegram call with a warm worker: median {fmt(first, 0)} ms, max "
        f"{fmt(worst, 0)} ms (target ≤ 100 ms: {verdict(worst <= FIRST_CALL_GOAL * 1000)}).",
        f"A worker's cold start: median {fmt(cold, 2)} s (target ≤ 2 s: "
        f"{verdict(max(run.cold_starts) <= COLD_START_GOAL)}); in a new interpreter aiogram "
        f"as a worker loads it (the models its sends use built, the rest at first use) takes "
        f"{fmt(loaded, 2)} s, `import aiogram` as usual {fmt(aiogram, 2)} s.",
    ]
