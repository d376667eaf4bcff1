"""The drain on SIGTERM or SIGINT: in order, bounded by ``server.shutdown_grace``.

1. Readiness fails (``/readyz`` 503) and gRPC health says NOT_SERVING, at once.
2. Open watch streams are told to end — SSE ``event: shutdown``, gRPC ``UNAVAILABLE``
   "server shutting down" — and get :attr:`ShutdownPlan.streams` (at most 1 s) to do so.
3. The listeners close; unary requests in flight get :attr:`ShutdownPlan.requests` to
   complete, then are cancelled (gRPC's stop grace and aiohttp's shutdown timeout: aiohttp
   waits for its handlers, then again for their cancellation, so it gets half of it each).
4. The embedded worker finishes the sends in hand with what is left, less
   :attr:`ShutdownPlan.reserve`; unfinished jobs go to other workers.
5. NATS and the database close.

Why: aiohttp's default shutdown timeout (60 s) waited for every open SSE handler, which only
ends when its broadcast does, then gRPC's grace, while the worker had drained first with the
listeners still accepting: 126 s for one SIGTERM. Whatever still overruns meets the
:class:`Watchdog`, which logs and ends the process at ``shutdown_grace``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:  # the API's parts: a worker process never loads them
    import grpc
    from aiohttp import web

    from tgbroadcast.core.health import Readiness
    from tgbroadcast.server.grpc.health import HealthFollower
    from tgbroadcast.server.streams import Watchers

logger = logging.getLogger(__name__)

OVERRAN_EXIT_CODE: Final = 1
"""The exit code when the watchdog ends the process (an orderly drain exits 0)."""


@dataclass(frozen=True, slots=True)
class ShutdownPlan:
    """How ``shutdown_grace`` seconds are shared between the steps (see the module)."""

    grace: float

    @property
    def streams(self) -> float:
        return min(1.0, self.grace / 10)

    @property
    def reserve(self) -> float:
        """Kept for closing NATS and the database at the end."""
        return min(2.0, self.grace / 10)

    @property
    def requests(self) -> float:
        return max(0.0, (self.grace - self.streams - self.reserve) / 2)


class ShutdownClock:
    """Seconds left of the grace, counted from :meth:`start` (or its first reading)."""

    def __init__(self, plan: ShutdownPlan) -> None:
        self.plan = plan
        self._deadline: float | None = None

    def start(self) -> None:
        if self._deadline is None:
            self._deadline = time.monotonic() + self.plan.grace

    def left(self) -> float:
        self.start()
        assert self._deadline is not None
        return max(0.0, self._deadline - time.monotonic())

    def worker_budget(self) -> float:
        """What the worker may spend finishing its sends in hand."""
        return max(0.0, self.left() - self.plan.reserve)


class ApiDrain:
    """Steps 1 to 3 for the API; idempotent (the first call does the work, later ones wait)."""

    def __init__(
        self,
        *,
        plan: ShutdownPlan,
        readiness: Readiness,
        health: HealthFollower,
        watchers: Watchers,
        grpc_server: grpc.aio.Server,
        runner: web.BaseRunner,
    ) -> None:
        self._plan = plan
        self._readiness = readiness
        self._health = health
        self._watchers = watchers
        self._grpc_server = grpc_server
        self._runner = runner
        self._lock = asyncio.Lock()
        self._done = False

    async def __call__(self) -> None:
        async with self._lock:
            if self._done:
                return
            self._done = True
            await self._drain()

    async def _drain(self) -> None:
        self._readiness.start_draining()
        await self._health.drain()
        open_streams = self._watchers.open
        self._watchers.close()
        if not await self._watchers.wait_closed(self._plan.streams):
            logger.warning(
                "watch streams still open after the drain told them to end",
                extra={"open": self._watchers.open, "of": open_streams},
            )
        logger.info(
            "API draining: listeners closed, requests in flight finishing",
            extra={"watch_streams_ended": open_streams, "within": self._plan.requests},
        )
        await asyncio.gather(self._grpc_server.stop(self._plan.requests), self._runner.cleanup())


class Watchdog:
    """Ends the process ``grace`` seconds after :meth:`start`, whatever the drain is doing.

    A thread, not a task: it must fire while the event loop is stuck too. It logs, flushes
    the log handlers and exits with :data:`OVERRAN_EXIT_CODE` without running any more
    Python clean-up (``os._exit``).
    """

    def __init__(self, grace: float) -> None:
        self._grace = grace
        self._timer: threading.Timer | None = None

    def start(self) -> None:
        if self._timer is None:
            self._timer = threading.Timer(self._grace, self._expire)
            self._timer.daemon = True
            self._timer.start()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _expire(self) -> None:
        logger.error(
            "shutdown overran server.shutdown_grace; exiting now",
            extra={"shutdown_grace": self._grace},
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stderr.flush()
        os._exit(OVERRAN_EXIT_CODE)
