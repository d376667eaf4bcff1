"""Readiness: whether this process should be given work now, and which check says no.

A process is ready while the database answers a query, NATS and JetStream answer, and it
is not draining (:meth:`Readiness.start_draining`, called when SIGTERM arrives). Liveness is
not decided here: a process whose event loop answers a request at all is live.

Each check runs with a short timeout (:data:`CHECK_TIMEOUT`): an outage that makes the
database hang must fail readiness quickly, not hold the prober. A check that did not answer
in time is left running (not cancelled inside a database driver) and waited for again by the
next round; one that hangs for :data:`ABANDON_AFTER` seconds is cancelled. Concurrent
callers share one round, and a round's result is reused for :data:`MAX_AGE` seconds, so an
unauthenticated prober cannot turn ``GET /readyz`` into load on the database. Answers name
the failure by exception type only (``failed (ConnectionRefusedError)``): addresses and
messages go to the log, once per change.

May import: :mod:`tgbroadcast.core.domain`, :mod:`tgbroadcast.core.tasks`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Protocol

from tgbroadcast.core.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

DATABASE: Final = "database"
NATS: Final = "nats"
DRAINING: Final = "draining"
OK: Final = "ok"
SHUTTING_DOWN: Final = "shutting down"

CHECK_TIMEOUT: Final = 0.8
"""Seconds a check may take before it counts as failed. gRPC health follows readiness within
two seconds while the event loop runs: a result reused for at most :data:`MAX_AGE`, one
re-check interval (``tgbroadcast.server.grpc.health.INTERVAL``), then this (a stalled loop
adds its stall and the retry window of one more timeout)."""
MAX_AGE: Final = 0.5
"""Seconds a round's result answers callers before the checks run again."""
ABANDON_AFTER: Final = 30.0
"""Seconds after which a check still waiting is cancelled, so a new one can start."""

Check = Callable[[], Awaitable[None]]
"""A check: returns when what it checks answers, raises (or hangs) when not."""


class Pingable(Protocol):
    async def ping(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ReadinessReport:
    """Each check's result: ``"ok"``, or why not (``"no answer within 0.8 s"``)."""

    checks: Mapping[str, str]

    @property
    def ready(self) -> bool:
        return all(result == OK for result in self.checks.values())

    @property
    def failing(self) -> tuple[str, ...]:
        """The names of the checks that failed, in check order."""
        return tuple(name for name, result in self.checks.items() if result != OK)


class Readiness:
    """The named checks of one process, and whether it is draining; safe to share."""

    def __init__(
        self,
        checks: Mapping[str, Check] | None = None,
        *,
        timeout: float = CHECK_TIMEOUT,
        max_age: float = MAX_AGE,
    ) -> None:
        self._checks = dict(checks or {})
        if DRAINING in self._checks:
            raise ValueError(f"{DRAINING!r} is the drain's own check")
        self._timeout = timeout
        self._max_age = max_age
        self._draining = asyncio.Event()
        self._probes: dict[str, asyncio.Task[None]] = {}
        self._round: asyncio.Task[dict[str, str]] | None = None
        self._latest: dict[str, str] = {}
        self._checked_at = float("-inf")
        self._last_errors: dict[str, BaseException] = {}

    @classmethod
    def of(cls, *, database: Pingable, nats: Pingable, **options: float) -> Readiness:
        """The service's checks: the store's ``SELECT 1`` and the queue's JetStream ping."""
        return cls({DATABASE: database.ping, NATS: nats.ping}, **options)

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    def start_draining(self) -> None:
        """From now on not ready, for good: the process is shutting down."""
        if not self._draining.is_set():
            logger.info("draining: readiness fails from now on")
        self._draining.set()

    async def wait_draining(self) -> None:
        await self._draining.wait()

    async def check(self) -> ReadinessReport:
        """Every check's result (fresh, or at most :data:`MAX_AGE` old), then the drain's."""
        loop = asyncio.get_running_loop()
        if self._checks and loop.time() - self._checked_at > self._max_age:
            if self._round is None:
                self._round = asyncio.create_task(self._run_round(), name="readiness")
            # Shielded: a caller that gives up does not cancel the round the others share.
            await asyncio.shield(self._round)
        results = dict(self._latest)
        results[DRAINING] = SHUTTING_DOWN if self.draining else OK
        return ReadinessReport(MappingProxyType(results))

    async def aclose(self) -> None:
        """Cancel the checks still running (when the process stops)."""
        await cancel_and_wait(self._round, *self._probes.values())
        self._probes.clear()
        self._round = None

    async def _run_round(self) -> dict[str, str]:
        try:
            for name, check in self._checks.items():
                probe = self._probes.get(name)
                if probe is None or probe.done():
                    probe = asyncio.create_task(_abandoning(check), name=f"readiness-{name}")
                    # A probe that answers after its round ended is read by the next round, or
                    # never (replaced): its failure is observed here, not logged by asyncio.
                    probe.add_done_callback(_observe)
                    self._probes[name] = probe
            loop = asyncio.get_running_loop()
            started = loop.time()
            _, waiting = await asyncio.wait(self._probes.values(), timeout=self._timeout)
            if waiting and loop.time() - started > 2 * self._timeout:
                # The event loop itself was stalled (a long import, a collection): the checks
                # had no time to answer, so they get their time again.
                await asyncio.wait(waiting, timeout=self._timeout)
            results = {name: self._result(name) for name in self._checks}
            self._log_changes(results)
            self._latest = results
            self._checked_at = asyncio.get_running_loop().time()
            return results
        finally:
            self._round = None

    def _result(self, name: str) -> str:
        probe = self._probes[name]
        if not probe.done():
            return f"no answer within {self._timeout:g} s"
        if probe.cancelled():
            return "no answer (abandoned)"
        error = probe.exception()
        if error is None:
            return OK
        self._last_errors[name] = error
        return f"failed ({type(error).__name__})"

    def _log_changes(self, results: dict[str, str]) -> None:
        for name, result in results.items():
            before = self._latest.get(name)
            if result == before:
                continue
            if result == OK:
                if before is not None:
                    logger.info("readiness check passes again", extra={"check": name})
            else:
                extra = {"check": name, "result": result}
                if result.startswith("failed") and name in self._last_errors:
                    extra["error"] = repr(self._last_errors[name])
                logger.warning("readiness check failed", extra=extra)


async def _abandoning(check: Check) -> None:
    async with asyncio.timeout(ABANDON_AFTER):
        await check()


def _observe(probe: asyncio.Task[None]) -> None:
    if not probe.cancelled():
        probe.exception()
