"""A job's hold on its recipients: per-recipient claims in SQL, renewed while the job runs.

Guarantees (any number of worker processes, on any machines):

* A job sends only to recipients it holds (:meth:`JobClaims.holds`), and a pending recipient
  is held by at most one job at a time (:meth:`~tgbroadcast.core.store.Store.claim_recipients`).
  Every handling of a job message has its own token, so a job redelivered to the same
  worker does not inherit the claims of the handling still running.
* A claim lasts ``lease`` seconds (the queue's AckWait) and is renewed with every job
  heartbeat (every third of it): a live holder keeps its recipients, a dead one's lapse at
  about the time JetStream redelivers its job. A send starts only while at least ``margin``
  seconds (one heartbeat) of the claim are left by this process's monotonic clock, so one
  missed renewal (a stalled event loop, a database hiccup) stops no send and two stop the
  job's further sends before anyone else can take its recipients over.
* Claims on recipients a job did not record (paused, cancelled, resumed, lost) are released
  when it ends, so another job may take them at once; a final outcome drops its claim.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import Sequence
from typing import Protocol

from tgbroadcast.core.queue import ReceivedJob
from tgbroadcast.core.store import Claimed, Store
from tgbroadcast.core.tasks import wait_event

logger = logging.getLogger(__name__)


class Renewable(Protocol):
    """A job's claims (a send job's :class:`JobClaims`, a recall job's hold)."""

    async def renew(self) -> None: ...


async def keep_alive(
    received: ReceivedJob, claims: Renewable, stop: asyncio.Event, *, interval: float
) -> None:
    """Until ``stop``: every ``interval`` seconds tell JetStream the job is in progress and
    renew its claims (a failure of either is logged, and tried again next time)."""
    while True:
        await wait_event(stop, interval)
        if stop.is_set():
            return
        try:
            await received.in_progress()
        except Exception as exc:
            logger.warning(
                "job heartbeat failed", extra={**job_fields(received), "error": repr(exc)}
            )
        try:
            await claims.renew()
        except Exception as exc:
            logger.warning(
                "renewing claims failed", extra={**job_fields(received), "error": repr(exc)}
            )


def job_fields(received: ReceivedJob) -> dict[str, object]:
    """What a log line says about the job it concerns."""
    return {
        "bot": received.job.bot,
        "broadcast_id": received.job.broadcast_id,
        "job": received.job.msg_id,
        "attempt": received.num_delivered,
    }


class ClaimTokens:
    """Claim tokens of one worker process: ``<12 hex of the process>-<job number>``, at
    most 32 characters, unique across processes (48 random bits each) and handlings."""

    def __init__(self) -> None:
        self.worker_id = secrets.token_hex(6)
        self._numbers = itertools.count(1)

    def next(self) -> str:
        return f"{self.worker_id}-{next(self._numbers)}"


class JobClaims:
    """The recipients one handling of a job holds in SQL."""

    def __init__(
        self, *, store: Store, broadcast_id: int, token: str, lease: float, margin: float
    ) -> None:
        if not 0 <= margin < lease:
            raise ValueError("the margin must be shorter than the lease")
        self._store = store
        self._broadcast_id = broadcast_id
        self.token = token
        self._lease = lease
        self._margin = margin
        self._held: frozenset[int] = frozenset()
        self._claimed: set[int] = set()
        self._usable_until = float("-inf")

    @property
    def held(self) -> frozenset[int]:
        """The recipients held at the last claim or renewal (final ones drop out)."""
        return self._held

    async def take(self, user_ids: Sequence[int]) -> Claimed:
        """Claim those of ``user_ids`` still pending and not held by another job."""
        started = time.monotonic()
        claimed = await self._store.claim_recipients(
            self._broadcast_id, user_ids, token=self.token, lease_seconds=self._lease
        )
        self._held = claimed.held
        self._claimed.update(claimed.held)
        self._usable_until = started + self._lease - self._margin
        return claimed

    async def renew(self) -> None:
        """Extend the claims still held (lost ones stay lost; final ones drop out)."""
        if self._held:
            await self.take(sorted(self._held))

    def holds(self, user_id: int) -> bool:
        """Whether a send to ``user_id`` may start now."""
        return user_id in self._held and time.monotonic() < self._usable_until

    async def release(self, recorded: set[int]) -> int:
        """Give up the claims on recipients this job took but did not record."""
        left = self._claimed - recorded
        self._held = frozenset()
        self._usable_until = float("-inf")
        if not left:
            return 0
        return await self._store.release_claims(self._broadcast_id, sorted(left), token=self.token)
