"""One measured run: a broadcast through the service, or the same recipients by a peer.

Either way the simulator is reset first, CPU and memory are measured over the run, and what
the simulator answered is analysed (:func:`bench.analysis.analyse`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from bench.analysis import Deliveries, analyse
from bench.children import Cluster
from bench.client import ServiceClient, finished_at
from bench.meter import Meter, Window, cpu_per_thousand
from bench.peers.run import LIBRARIES
from bench.profiles import Bench

SERVICE_ROLES = ("server", "nats-server", "worker")


@dataclass(frozen=True, slots=True, kw_only=True)
class RunResult:
    label: str
    deliveries: Deliveries
    window: Window
    requested_at: float
    done_at: float
    """When the sender said it was done: the broadcast's ``finished_at``, or the peer's."""
    cpu_roles: tuple[str, ...]

    @property
    def total_seconds(self) -> float:
        return self.done_at - self.requested_at

    @property
    def cpu(self) -> float | None:
        """CPU seconds of the sender's own processes (not the simulator's)."""
        return self.window.cpu(*self.cpu_roles)

    @property
    def cpu_per_1k(self) -> float | None:
        return cpu_per_thousand(self.cpu, self.deliveries.delivered + self.deliveries.duplicates)

    def numbers(self, limit: float | None = None) -> dict[str, object]:
        """The raw numbers of this run, for :func:`bench.report.emit`."""
        usage = {
            role: {"cpu_s": round(u.cpu_seconds, 3), "peak_rss_mb": round(u.peak_rss_mb, 1)}
            for role, u in self.window.usage.items()
        }
        return {
            **self.deliveries.to_json(limit),
            "total_s": round(self.total_seconds, 3),
            "sender_cpu_s": None if self.cpu is None else round(self.cpu, 3),
            "sender_cpu_s_per_1k": None if self.cpu_per_1k is None else round(self.cpu_per_1k, 4),
            "processes": usage,
        }


def track_cluster(meter: Meter, cluster: Cluster) -> None:
    """Measure the cluster's server (its nats-server child apart) and every worker."""
    if cluster.server is not None:
        meter.track("server", cluster.server.pid, children_as="nats-server")
    for worker in cluster.workers:
        meter.track("worker", worker.pid)


async def service_run(
    bench: Bench,
    cluster: Cluster,
    client: ServiceClient,
    recipients: Sequence[int],
    *,
    label: str,
    paid: bool = False,
    within: float,
) -> RunResult:
    """``POST /send-message`` to ``recipients``; measured until the broadcast is final."""
    await bench.sim.reset()
    track_cluster(bench.meter, cluster)
    async with bench.meter.measuring() as window:
        requested_at = time.time()
        broadcast_id = await client.send_rest(recipients, paid=paid)
        state = await client.wait_final(broadcast_id, within=within)
    calls = await bench.sim.calls()
    return RunResult(
        label=label,
        deliveries=analyse(calls, recipients, requested_at=requested_at),
        window=window,
        requested_at=requested_at,
        done_at=finished_at(state) or time.time(),
        cpu_roles=SERVICE_ROLES,
    )


def peer_command(
    kind: str,
    recipients: Sequence[int],
    *,
    rate: float,
    paid: bool = False,
    concurrency: int = 32,
) -> dict[str, object]:
    """The command of one peer run to ``recipients`` (consecutive ids)."""
    return {
        "kind": kind,
        "rate": rate,
        "concurrency": concurrency,
        "first": recipients[0],
        "count": len(recipients),
        "paid": paid,
    }


async def peer_run(
    bench: Bench,
    kind: str,
    recipients: Sequence[int],
    *,
    rate: float,
    paid: bool = False,
    within: float,
) -> RunResult:
    """A peer sends to ``recipients`` (consecutive ids); measured from its first send."""
    peer = await bench.peers.get(LIBRARIES[kind])
    await bench.sim.reset()
    bench.meter.track("peer", peer.child.pid)
    try:
        async with bench.meter.measuring() as window:
            await peer.go(peer_command(kind, recipients, rate=rate, paid=paid))
            said = await peer.result(within=within)
    finally:
        bench.meter.forget(peer.child.pid)
    calls = await bench.sim.calls()
    requested_at = float(said["started_at"])
    return RunResult(
        label=kind,
        deliveries=analyse(calls, recipients, requested_at=requested_at),
        window=window,
        requested_at=requested_at,
        done_at=float(said["finished_at"]),
        cpu_roles=("peer",),
    )
