"""gRPC health (``grpc.health.v1``) that follows readiness.

The whole server (``""``) and ``tgbroadcast.v1.BroadcastService`` say SERVING only while
:class:`~tgbroadcast.core.health.Readiness` passes: a background task re-checks every
:data:`INTERVAL` seconds, so the status follows an outage within two seconds while the event
loop runs — at most a result reused for ``MAX_AGE`` (0.5 s), plus :data:`INTERVAL`, plus a
check's ``CHECK_TIMEOUT`` (0.8 s): 1.8 s (a stalled loop adds its stall). When the process
drains it says NOT_SERVING at once, for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType
from typing import Final

from grpc_health.v1 import health, health_pb2

from tgbroadcast.core.health import Readiness
from tgbroadcast.core.tasks import cancel_and_wait
from tgbroadcast.v1 import broadcast_pb2 as pb

logger = logging.getLogger(__name__)

INTERVAL: Final = 0.5
"""Seconds between readiness checks (with ``MAX_AGE`` and ``CHECK_TIMEOUT``: under 2 s)."""
BROADCAST_SERVICE: Final = pb.DESCRIPTOR.services_by_name["BroadcastService"].full_name
SERVICES: Final = (health.OVERALL_HEALTH, BROADCAST_SERVICE)
_SERVING: Final = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING: Final = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthFollower:
    """A ``HealthServicer`` kept in step with readiness while the context is entered."""

    def __init__(self, readiness: Readiness, *, interval: float = INTERVAL) -> None:
        self.servicer = health.aio.HealthServicer()
        self._readiness = readiness
        self._interval = interval
        self._serving: bool | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> HealthFollower:
        await self._follow_once()  # SERVING only after a check passed
        self._task = asyncio.create_task(self._follow(), name="grpc-health")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await cancel_and_wait(self._task)

    async def drain(self) -> None:
        """NOT_SERVING for every service, for good (the process is shutting down)."""
        await self.servicer.enter_graceful_shutdown()

    async def _follow(self) -> None:
        while not self._readiness.draining:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._readiness.wait_draining()
            try:
                await self._follow_once()
            except Exception:  # pragma: no cover - keep following whatever happens
                logger.exception("gRPC health: readiness check failed unexpectedly")
        await self.drain()

    async def _follow_once(self) -> None:
        report = await self._readiness.check()
        if report.ready == self._serving:
            return
        self._serving = report.ready
        for service in SERVICES:
            await self.servicer.set(service, _SERVING if report.ready else _NOT_SERVING)
