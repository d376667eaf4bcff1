"""What a worker knows of its broadcasts' states while it sends them: paused, cancelled,
failed or resumed elsewhere, read from SQL at most every ``STATUS_INTERVAL``.

Guarantees:

* A send asks :meth:`BroadcastStates.stopping` before it starts; a broadcast's state is read
  from SQL at most every ``STATUS_INTERVAL`` seconds, one read at a time per broadcast shared
  by every send that finds it stale, so every worker stops within that of a pause, cancel or
  failure anywhere, and the database sees about one read per broadcast per second per worker.
* A job of a newer generation (the broadcast was resumed after the last read) never trusts an
  older read: it reads again, or shares a read started after it asked.
* A broadcast seen final here (or stopped by this worker) is never read again.
* A job's own read of its broadcast (:meth:`BroadcastStates.saw`) counts as a read: its sends
  do not read the broadcast again within ``STATUS_INTERVAL`` of it (a one-recipient job read
  it twice).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from tgbroadcast.core.domain.access import DEFAULT_BOT
from tgbroadcast.core.domain.model import Broadcast, BroadcastStatus
from tgbroadcast.core.domain.states import SENDABLE
from tgbroadcast.core.store import Store
from tgbroadcast.core.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

__all__ = ["STATUS_INTERVAL", "BroadcastStates"]

STATUS_INTERVAL = 1.0
"""Seconds between reads of a broadcast's status while sending it."""
REMEMBERED = 1024
"""Broadcasts whose last read state is kept."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _KnownStatus:
    """A broadcast's state as one read from SQL found it."""

    read_at: float
    """When the read started (monotonic seconds)."""
    status: BroadcastStatus
    resumed_at: datetime | None
    paid_stopped: bool = False
    """Its Stars budget is spent: the rest goes at the free rate."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _StatusRead:
    """A read of a broadcast's state in progress, shared by the sends that wait for it."""

    started: float
    """Monotonic seconds."""
    task: asyncio.Task[_KnownStatus | None]


class BroadcastStates:
    """The states of the broadcasts one bot's lane sends, as last read from SQL."""

    def __init__(self, store: Store, *, bot: str = DEFAULT_BOT) -> None:
        self._store = store
        self._bot = bot
        self._stopped: set[int] = set()
        self._status_read: OrderedDict[int, _KnownStatus] = OrderedDict()
        """Per broadcast: its state as last read."""
        self._status_reads: dict[int, _StatusRead] = {}
        """Per broadcast: the read of its state in progress."""

    def stopped(self, broadcast_id: int) -> bool:
        """Whether this worker saw the broadcast stop (its remaining sends are skipped)."""
        return broadcast_id in self._stopped

    def stop(self, broadcast_id: int) -> None:
        """This worker stopped the broadcast: no more sends, no more reads."""
        self._stopped.add(broadcast_id)

    async def stopping(self, broadcast: Broadcast) -> bool:
        """Whether sends of this job (``broadcast`` as the job read it) must stop: the
        broadcast stopped here, or — on any worker or API server — it is no longer queued or
        running (failed, cancelled, paused) or it was resumed since the job read it (a newer
        generation of jobs covers its recipients). Its state is read from SQL at most every
        ``STATUS_INTERVAL`` seconds, so every worker stops within that."""
        broadcast_id = broadcast.id
        if broadcast_id in self._stopped:
            return True
        now = time.monotonic()
        known = self._status_read.get(broadcast_id)
        # A job that read a newer generation than the one remembered: read it again.
        if (
            known is None
            or now - known.read_at >= STATUS_INTERVAL
            or _newer(broadcast, known.resumed_at)
        ):
            # One read at a time per broadcast: the sends that find the state stale at once
            # all wait for the same read.
            known = await self._shared_read(broadcast_id) or known
            if known is not None and _newer(broadcast, known.resumed_at):  # read before a resume
                known = await self._shared_read(broadcast_id, after=now) or known
        if known is None:
            return False
        if known.status.is_final:
            self._stopped.add(broadcast_id)
            return True
        return known.status not in SENDABLE or known.resumed_at != broadcast.resumed_at

    def saw(self, broadcast: Broadcast, *, read_at: float) -> _KnownStatus:
        """``broadcast`` as a read of it from SQL found it, started at ``read_at`` (monotonic
        seconds): remembered as the status reads are, unless a later read is; what it found."""
        known = _KnownStatus(
            read_at=read_at,
            status=broadcast.status,
            resumed_at=broadcast.resumed_at,
            paid_stopped=broadcast.paid_stopped_at is not None,
        )
        cached = self._status_read.get(broadcast.id)
        if cached is not None and cached.read_at > read_at:  # a later read came back first
            return known
        self._status_read[broadcast.id] = known
        self._status_read.move_to_end(broadcast.id)
        while len(self._status_read) > REMEMBERED:
            self._status_read.popitem(last=False)
        return known

    def paid_stopped(self, broadcast: Broadcast) -> bool:
        """Whether the broadcast's paid sending stopped, its Stars budget spent (as the job
        read it, or as last read here: within ``STATUS_INTERVAL`` of the stop)."""
        if broadcast.paid_stopped_at is not None:
            return True
        known = self._status_read.get(broadcast.id)
        return known is not None and known.paid_stopped

    async def _shared_read(self, broadcast_id: int, *, after: float = 0.0) -> _KnownStatus | None:
        """The broadcast's state from a read of it in progress, or a new one; with
        ``after``, only a read started at or after that moment (monotonic) is shared."""
        reading = self._status_reads.get(broadcast_id)
        if reading is None or reading.started < after:
            task = asyncio.create_task(self._read_status(broadcast_id), name="status-read")
            reading = _StatusRead(started=time.monotonic(), task=task)
            self._status_reads[broadcast_id] = reading

            def forget(_: asyncio.Task[_KnownStatus | None], entry: _StatusRead = reading) -> None:
                if self._status_reads.get(broadcast_id) is entry:
                    del self._status_reads[broadcast_id]

            task.add_done_callback(forget)
        return await asyncio.shield(reading.task)

    async def aclose(self) -> None:
        """Cancel the status reads still in progress (the worker stopped)."""
        await cancel_and_wait(*(reading.task for reading in self._status_reads.values()))

    async def _read_status(self, broadcast_id: int) -> _KnownStatus | None:
        """Read the broadcast's state from SQL and remember it; None if the read failed."""
        started = time.monotonic()
        try:
            latest = await self._store.get_broadcast(broadcast_id)
        except Exception as exc:
            logger.warning(
                "reading a broadcast's status failed",
                extra={"bot": self._bot, "broadcast_id": broadcast_id, "error": repr(exc)},
            )
            return None
        return self.saw(latest, read_at=started)


def _newer(broadcast: Broadcast, resumed_at: datetime | None) -> bool:
    """Whether ``broadcast`` was resumed later than ``resumed_at`` (resumes only move on)."""
    if broadcast.resumed_at is None:
        return False
    return resumed_at is None or broadcast.resumed_at > resumed_at
