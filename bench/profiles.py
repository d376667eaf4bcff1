"""How big each scenario runs: ``full`` (``make bench``), ``quick`` and ``smoke`` (the test).

And :class:`Bench`, what every scenario is handed: the profile, the simulator process, the
meter and a folder of its own.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from bench.children import PeerPool, SimulatorProcess
from bench.meter import Meter


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    name: str
    # 1. Limit utilisation: (limit per second, recipients) pairs, worker counts.
    limits: tuple[tuple[int, int], ...]
    limit_workers: tuple[int, ...]
    acceptance: tuple[int, int, int]
    """The issue's own run: (limit per second, recipients, worker processes)."""
    # 2. Overhead ceiling.
    overhead_recipients: int
    overhead_workers: tuple[int, ...]
    overhead_repeats: int
    overhead_backends: tuple[str, ...]
    # 3. Paid broadcast.
    paid_recipients: int
    paid_workers: tuple[int, ...]
    # 4. Scale of a broadcast.
    scale_recipients: int
    scale_send_seconds: float
    scale_backends: tuple[str, ...]
    startup_first_calls: int
    """One-recipient broadcasts timed from the 202 to their Telegram call."""
    startup_cold_starts: int
    """Workers started beside a running server, each timed to consuming."""
    # 5. Watchers.
    watchers: int
    watch_recipients: int
    watch_rate: int
    idle_watchers: int
    idle_cpu_window: float
    """Seconds the idle watchers' server CPU is measured over (after as long to settle)."""
    # 6. Crash cost.
    crash_recipients: int
    crash_rate: int
    crash_every: float
    crash_kills: int
    crash_workers: int
    crash_ack_wait: float
    # 7. API latency.
    latency_small_requests: int
    latency_big_requests: int
    latency_big_size: int
    latency_concurrency: int
    # 9. Replication: one broadcast of this size per repetition, on R1 and on R3.
    replication_recipients: int
    replication_repeats: int
    replication_workers: int
    """Worker processes beside each set-up's server."""
    # 10. Several bots: how many broadcast at once, recipients per bot at 30/s; then a paid
    # bot (recipients at 1000/s) beside a free one.
    bots_counts: tuple[int, ...]
    bots_recipients: int
    bots_paid_recipients: int
    bots_backlog_recipients: int
    """A paid bot's backlog beside which a free bot sends."""
    bots_workers: int
    """Worker processes serving every bot."""
    # 11. Recall: a broadcast to this many recipients at this limit, recalled once completed.
    recall_limit: int
    recall_recipients: int


FULL = Profile(
    name="full",
    limits=((30, 1_000), (300, 6_000)),
    limit_workers=(1, 2, 5),
    acceptance=(50, 1_000, 3),
    overhead_recipients=4_000,
    overhead_workers=(1, 2),
    overhead_repeats=2,
    overhead_backends=("sqlite", "postgres"),
    paid_recipients=15_000,
    paid_workers=(1, 2),
    scale_recipients=1_000_000,
    scale_send_seconds=15.0,
    scale_backends=("sqlite", "postgres", "mariadb"),
    startup_first_calls=20,
    startup_cold_starts=3,
    watchers=100,
    idle_watchers=1000,
    idle_cpu_window=5.0,
    watch_recipients=2_000,
    watch_rate=1_000,
    crash_recipients=10_000,
    crash_rate=1_000,
    crash_every=4.0,
    crash_kills=3,
    crash_workers=3,
    crash_ack_wait=5.0,
    latency_small_requests=600,
    latency_big_requests=30,
    latency_big_size=10_000,
    latency_concurrency=8,
    replication_recipients=10_000,
    replication_repeats=3,
    replication_workers=2,
    bots_counts=(1, 2, 5),
    bots_recipients=900,
    bots_paid_recipients=20_000,
    bots_backlog_recipients=1_000_000,
    bots_workers=2,
    recall_limit=300,
    recall_recipients=10_000,
)

QUICK = Profile(
    name="quick",
    limits=((30, 150), (300, 1_500)),
    limit_workers=(1, 2),
    acceptance=(50, 1_000, 3),
    overhead_recipients=3_000,
    overhead_workers=(1, 2),
    overhead_repeats=1,
    overhead_backends=("sqlite",),
    paid_recipients=2_000,
    paid_workers=(2,),
    scale_recipients=100_000,
    scale_send_seconds=5.0,
    scale_backends=("sqlite",),
    startup_first_calls=10,
    startup_cold_starts=2,
    watchers=20,
    idle_watchers=200,
    idle_cpu_window=2.0,
    watch_recipients=1_000,
    watch_rate=1_000,
    crash_recipients=2_000,
    crash_rate=1_000,
    crash_every=2.0,
    crash_kills=2,
    crash_workers=3,
    crash_ack_wait=3.0,
    latency_small_requests=200,
    latency_big_requests=8,
    latency_big_size=10_000,
    latency_concurrency=4,
    replication_recipients=3_000,
    replication_repeats=2,
    replication_workers=2,
    bots_counts=(1, 2, 5),
    bots_recipients=450,
    bots_paid_recipients=8_000,
    bots_backlog_recipients=100_000,
    bots_workers=2,
    recall_limit=300,
    recall_recipients=2_000,
)

SMOKE = Profile(
    name="smoke",
    limits=((300, 150),),
    limit_workers=(1,),
    acceptance=(300, 60, 1),
    overhead_recipients=300,
    overhead_workers=(1,),
    overhead_repeats=1,
    overhead_backends=("sqlite",),
    paid_recipients=200,
    paid_workers=(1,),
    scale_recipients=2_000,
    scale_send_seconds=1.0,
    scale_backends=("sqlite",),
    startup_first_calls=2,
    startup_cold_starts=1,
    watchers=3,
    idle_watchers=4,
    idle_cpu_window=0.2,
    watch_recipients=100,
    watch_rate=1_000,
    crash_recipients=300,
    crash_rate=300,
    crash_every=0.5,
    crash_kills=1,
    crash_workers=2,
    crash_ack_wait=2.0,
    latency_small_requests=20,
    latency_big_requests=2,
    latency_big_size=1_000,
    latency_concurrency=2,
    replication_recipients=200,
    replication_repeats=1,
    replication_workers=1,
    bots_counts=(1, 2),
    bots_recipients=60,
    bots_paid_recipients=400,
    bots_backlog_recipients=3_000,
    bots_workers=1,
    recall_limit=300,
    recall_recipients=200,
)

PROFILES = {profile.name: profile for profile in (FULL, QUICK, SMOKE)}

ALL_PEERS = ("aiogram-sleep", "aiogram-retry", "ptb")


def installed_peers() -> tuple[str, ...]:
    """The peers whose library is installed (python-telegram-bot is in the bench extra)."""
    have_ptb = importlib.util.find_spec("telegram") is not None
    return tuple(peer for peer in ALL_PEERS if peer != "ptb" or have_ptb)


@dataclass(frozen=True, slots=True, kw_only=True)
class Bench:
    """What a scenario is handed."""

    profile: Profile
    workdir: Path
    sim: SimulatorProcess
    meter: Meter
    peer_kinds: tuple[str, ...]
    """The peers to measure (installed and chosen)."""
    peers: PeerPool

    def folder(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path
