"""CPU seconds and peak memory of the processes a benchmark runs, measured with psutil.

A :class:`Meter` watches processes by role (``server``, ``nats-server``, ``worker``,
``simulator``, ``peer``...). Within :meth:`Meter.measuring` it samples every tracked process
every ``interval`` seconds: the CPU time a process used inside the window (user + system;
a process started inside the window counts from its start, so a restarted worker's start-up
is included) and its peak resident memory seen by the samples. A process killed inside the
window keeps what the last sample saw. Without psutil (the bench extra not installed) the
meter measures nothing and every figure is ``None``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

try:
    import psutil
except ImportError:  # the bench extra is not installed: no CPU or memory figures
    HAVE_PSUTIL = False
else:
    HAVE_PSUTIL = True

MB = 1024 * 1024


def resident_mb(pid: int) -> float:
    """A process's resident memory now, in MB (NaN without the bench extra's psutil)."""
    if not HAVE_PSUTIL:
        return math.nan
    return float(psutil.Process(pid).memory_info().rss) / MB


def cpu_seconds(pid: int) -> float:
    """A process's user + system CPU time so far (NaN without the bench extra's psutil)."""
    if not HAVE_PSUTIL:
        return math.nan
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """What the processes of one role used in a window."""

    cpu_seconds: float
    """User + system CPU time, summed over the role's processes."""
    peak_rss_mb: float
    """The largest resident memory any one process of the role reached."""
    processes: int


@dataclass
class Window:
    """The figures of one :meth:`Meter.measuring` window, filled in when it closes."""

    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0
    usage: dict[str, Usage] = field(default_factory=dict)
    rss_timeline: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    """Per role, (seconds into the window, summed RSS in MB) at each sample."""

    def cpu(self, *roles: str) -> float | None:
        """CPU seconds of ``roles`` together (every role when none is named)."""
        if not self.usage:
            return None
        chosen = roles or tuple(self.usage)
        return sum(self.usage[r].cpu_seconds for r in chosen if r in self.usage)


@dataclass
class _Tracked:
    role: str
    pid: int
    with_children: bool
    process: object = None
    cpu_start: float | None = None
    cpu_last: float = 0.0
    peak: float = 0.0
    rss: float = 0.0


class Meter:
    """Watches processes by role; see the module docs."""

    def __init__(self, *, interval: float = 0.25) -> None:
        self._interval = interval
        self._tracked: dict[int, _Tracked] = {}

    @property
    def available(self) -> bool:
        return HAVE_PSUTIL

    def track(self, role: str, pid: int, *, children_as: str | None = None) -> None:
        """Measure process ``pid`` as ``role``; its child processes (the embedded
        nats-server of ``tgbroadcast server``) as ``children_as`` when given."""
        if not HAVE_PSUTIL:
            return
        self._tracked[pid] = _Tracked(role=role, pid=pid, with_children=False)
        if children_as is not None:
            self._tracked[-pid] = _Tracked(role=children_as, pid=pid, with_children=True)

    def forget(self, pid: int) -> None:
        self._tracked.pop(pid, None)
        self._tracked.pop(-pid, None)

    @asynccontextmanager
    async def measuring(self) -> AsyncIterator[Window]:
        """A window: CPU used and peak memory of every tracked process from now to exit."""
        window = Window()
        if not HAVE_PSUTIL:
            yield window
            return
        for tracked in self._tracked.values():
            tracked.cpu_start = None
            tracked.peak = 0.0
        self._sample(window, baseline=True)
        sampler = asyncio.create_task(self._sample_every(window))
        try:
            yield window
        finally:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
            self._sample(window, baseline=False)
            window.seconds = time.monotonic() - window.started
            window.usage = self._usage()

    async def _sample_every(self, window: Window) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self._sample(window, baseline=False)

    def _sample(self, window: Window, *, baseline: bool) -> None:
        elapsed = time.monotonic() - window.started
        rss_by_role: dict[str, float] = {}
        for tracked in self._tracked.values():
            cpu, rss = _measure(tracked)
            if cpu is None:
                continue
            if tracked.cpu_start is None:
                # Started inside the window: count from its start (0), else from now.
                tracked.cpu_start = cpu if baseline else 0.0
            tracked.cpu_last = cpu
            tracked.rss = rss
            tracked.peak = max(tracked.peak, rss)
            rss_by_role[tracked.role] = rss_by_role.get(tracked.role, 0.0) + rss
        for role, rss in rss_by_role.items():
            window.rss_timeline.setdefault(role, []).append((elapsed, rss))

    def _usage(self) -> dict[str, Usage]:
        by_role: dict[str, list[_Tracked]] = {}
        for tracked in self._tracked.values():
            if tracked.cpu_start is not None:
                by_role.setdefault(tracked.role, []).append(tracked)
        return {
            role: Usage(
                cpu_seconds=sum(t.cpu_last - (t.cpu_start or 0.0) for t in members),
                peak_rss_mb=max(t.peak for t in members),
                processes=len(members),
            )
            for role, members in by_role.items()
        }


def _measure(tracked: _Tracked) -> tuple[float | None, float]:
    """(CPU seconds so far, RSS in MB) of a tracked process (or its children)."""
    try:
        if tracked.process is None:
            tracked.process = psutil.Process(tracked.pid)
        process = tracked.process
        assert isinstance(process, psutil.Process)
        targets = process.children(recursive=True) if tracked.with_children else [process]
        cpu = rss = 0.0
        for target in targets:
            with target.oneshot():
                times = target.cpu_times()
                cpu += times.user + times.system
                rss += target.memory_info().rss / MB
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        if tracked.cpu_start is None:
            return None, 0.0
        return tracked.cpu_last, tracked.rss
    if tracked.with_children and not targets:
        return None, 0.0
    return cpu, rss


def cpu_per_thousand(cpu: float | None, messages: int) -> float | None:
    """CPU seconds per 1,000 messages (``None`` when unmeasured or nothing was sent)."""
    if cpu is None or messages <= 0:
        return None
    return cpu * 1000.0 / messages


@dataclass(frozen=True, slots=True)
class Load:
    """A snapshot for :func:`machine_load`: when, and CPU seconds used so far by the whole
    machine (every core, not idle) and by this process with all its descendants."""

    at: float
    busy: float
    ours: float


def load_now() -> Load | None:
    """The machine's CPU use so far, and ours (``None`` without psutil)."""
    if not HAVE_PSUTIL:
        return None
    times = psutil.cpu_times()
    busy = sum(times) - times.idle - getattr(times, "iowait", 0.0)
    me = psutil.Process()
    ours = sum(me.cpu_times()[:4])
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
            ours += sum(child.cpu_times()[:2])
    return Load(at=time.monotonic(), busy=busy, ours=ours)


def machine_load(start: Load | None, end: Load | None) -> tuple[float, float] | None:
    """(cores busy on average, of which outside this benchmark) between two snapshots."""
    if start is None or end is None or end.at <= start.at:
        return None
    seconds = end.at - start.at
    busy = (end.busy - start.busy) / seconds
    ours = (end.ours - start.ours) / seconds
    return busy, max(0.0, busy - ours)
