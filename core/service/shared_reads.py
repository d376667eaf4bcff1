"""One read of a broadcast's row for every watcher of it in the process that needs one.

A watcher of a broadcast that is not final reads the broadcast from SQL after each quiet
second (its net for a finish whose event it missed, :mod:`.watching`): a thousand dashboards
open on a paused or scheduled broadcast were a thousand queries a second. :class:`SharedReads`
makes them one: a caller says how old a read it accepts — one *begun* at or after
``fresh_after`` — and gets the latest such read, in flight or done, or a new one.

Guarantees:

* A caller never gets a read begun before its ``fresh_after`` (a watcher that saw a finish
  event asks for a read begun after it, and gets the row as the finish left it or later).
* At most one read per broadcast is started for callers that accept it; a read runs in a
  task of its own, so a caller that leaves (a closed stream) does not cancel it for the
  others. Its failure (``NotFound``, a database error) reaches every caller that awaited it.
* At most one read per broadcast is in flight: a caller that needs a newer one than the read
  in flight waits for the *next* read, begun as that one ends and shared by every caller
  that came meanwhile (two hundred watches opening at once, or seeing the same finish event,
  are two reads, not two hundred).
* A read that succeeded is kept for :data:`KEEP` seconds, then dropped (the process keeps
  nothing for broadcasts nobody watches); one that failed is dropped at once, so a later
  caller reads again rather than get an old failure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from tgbroadcast.core.domain.model import Broadcast
from tgbroadcast.core.store import Store

KEEP = 2.0
"""Seconds a finished read stays available to later callers."""


class SharedReads:
    """Shared reads of broadcasts' rows (see the module's docs); one per process."""

    def __init__(
        self, store: Store, *, keep: float = KEEP, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._store = store
        self._keep = keep
        self._clock = clock
        self._reads: dict[int, tuple[float, asyncio.Task[Broadcast]]] = {}
        """Per broadcast: the latest read, with the time it began."""
        self._next: dict[int, asyncio.Task[Broadcast]] = {}
        """Per broadcast: the read to begin once the one in flight ends."""

    @property
    def kept(self) -> int:
        """Broadcasts with a read kept (in flight, or finished less than KEEP ago)."""
        return len(self._reads)

    async def get(self, broadcast_id: int, *, fresh_after: float) -> Broadcast:
        """The broadcast as a read begun at or after ``fresh_after`` (this clock's time)
        found it; ``NotFound`` if there is none."""
        latest = self._reads.get(broadcast_id)
        if latest is not None and latest[0] >= fresh_after:
            return await asyncio.shield(latest[1])
        if latest is None or latest[1].done():
            return await asyncio.shield(self._start(broadcast_id)[1])
        following = self._next.get(broadcast_id)
        if following is None:
            following = self._next[broadcast_id] = asyncio.create_task(
                self._after(broadcast_id, latest[1]), name=f"read-broadcast-{broadcast_id}-next"
            )
            following.add_done_callback(_retrieved)
        return await asyncio.shield(following)

    async def _after(self, broadcast_id: int, current: asyncio.Task[Broadcast]) -> Broadcast:
        """A read begun once ``current`` (in flight) has ended: after every caller waiting
        for it had asked."""
        await asyncio.wait([current])
        del self._next[broadcast_id]
        return await self._start(broadcast_id)[1]

    def now(self) -> float:
        return self._clock()

    def _start(self, broadcast_id: int) -> tuple[float, asyncio.Task[Broadcast]]:
        begun = self._clock()
        task = asyncio.create_task(
            self._store.get_broadcast(broadcast_id), name=f"read-broadcast-{broadcast_id}"
        )
        entry = (begun, task)
        self._reads[broadcast_id] = entry

        def finished(task: asyncio.Task[Broadcast]) -> None:
            if task.cancelled() or task.exception() is not None:  # (retrieved: all may have left)
                self._drop(broadcast_id, entry)  # a failure is never handed to later callers
            else:
                asyncio.get_running_loop().call_later(self._keep, self._drop, broadcast_id, entry)

        task.add_done_callback(finished)
        return entry

    def _drop(self, broadcast_id: int, entry: tuple[float, asyncio.Task[Broadcast]]) -> None:
        if self._reads.get(broadcast_id) is entry:
            del self._reads[broadcast_id]


def _retrieved(task: asyncio.Task[Broadcast]) -> None:
    """Marks a shared read's failure as seen (every caller may have left)."""
    if not task.cancelled():
        task.exception()
