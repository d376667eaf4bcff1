"""One subscription per broadcast per process, fanned out in memory to every watcher of it.

:class:`EventFeeds` gives each watcher of a broadcast the same thing as
:meth:`~.watching.EventWatching.watch_from` — every event from a stream sequence on, in
stream order, each once, with ``Idle()`` when nothing came for a while — but all watchers of
one broadcast in this process share *one* NATS consumer (a :class:`_Feed`): its events are
fetched and decoded once, kept in a bounded window of the latest :data:`WINDOW` events, and
read by every watcher at its own pace.

Guarantees:

* **One consumer per broadcast**, however many watchers: 1,000 idle watchers cost a cursor
  each, not a consumer. The feed's consumer is opened for the first watcher and closed (the
  consumer deleted) when the last one leaves. It starts at its first watcher's position (a
  resumed watcher does not wait for the broadcast's whole history to be read again); a
  watcher from earlier reads that part as a gap.
* **Slow watchers never hold anyone up.** The feed never waits for a watcher. A watcher that
  falls behind the window (or joins after its start, for a broadcast with more events than
  the window) reads the gap on a consumer of its own from the next event it has not seen —
  a *resumable gap* — and rejoins the shared window once it has caught up to it. Nothing is
  skipped or repeated either way.
* **Batched for the streams.** New events are handed to the watchers at most every
  :data:`PUBLISH_EVERY` seconds (the first after a quiet spell at once): a busy broadcast's
  watchers each wake and write once per hand-over, not once per fetch.
* **Failures reach every watcher.** If the feed's consumer cannot be kept (NATS gone for
  longer than :data:`~.watching.WATCH_PATIENCE`), every watcher of it gets the error; the next
  watcher starts a new feed.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing

from tgbroadcast.core.domain.errors import QueueError
from tgbroadcast.core.queue.payloads import Idle
from tgbroadcast.core.queue.watching import EventWatching, Sequenced

logger = logging.getLogger(__name__)

WINDOW = 4096
"""Latest events a feed keeps for its watchers; one further behind reads its own gap."""

PUBLISH_EVERY = 0.05
"""Seconds between a feed's handings of new events to its watchers (the first after a quiet
spell at once). Each hand-over wakes every watcher and each writes to its stream; at 1000
outcomes a second, fetches a few milliseconds apart made a write per watcher for every ten or
twenty outcomes. Handed over at most twenty times a second, 200 watchers' streams cost the
server 0.8-1.0 CPU s per 2,000 outcomes instead of 1.1-1.4, and their clients 0.8-0.9 instead
of 1.2, for the same lag (``python -m bench --only 5``, docs/profiles.md)."""


def _seq(item: Sequenced) -> int:
    return item.seq


class _Feed:
    """One broadcast's shared consumer and its window of latest events."""

    def __init__(
        self, queue: EventWatching, broadcast_id: int, *, window: int, start_seq: int
    ) -> None:
        self.broadcast_id = broadcast_id
        self.watchers = 0
        self._window = window
        self._items: list[Sequenced] = []
        self._start = 0
        """Index in ``_items`` of the window's first event (older ones await compaction)."""
        self._start_seq = start_seq
        self._evicted_seq = start_seq - 1
        """The sequence of the last event that left the window, or that the feed never read
        (it starts at its first watcher's sequence: a watcher from earlier reads its gap)."""
        self._arrived = asyncio.Event()
        self._pending: list[Sequenced] = []
        """Events fetched and not yet handed to the watchers (:data:`PUBLISH_EVERY`)."""
        self._publishing: asyncio.TimerHandle | None = None
        self._published_at = float("-inf")
        self._error: BaseException | None = None
        self._task = asyncio.create_task(self._fill(queue), name=f"feed-{broadcast_id}")

    @property
    def failed(self) -> bool:
        return self._error is not None

    def since(self, next_seq: int) -> list[Sequenced] | None:
        """The window's events from sequence ``next_seq`` on ([] if none yet); None when
        some may have left the window already (``next_seq`` is not past the last evicted
        event): the caller reads those on a consumer of its own."""
        self._raise_failure()
        if next_seq <= self._evicted_seq:
            return None
        at = bisect.bisect_left(self._items, next_seq, lo=self._start, key=_seq)
        return self._items[at:]

    async def wait(self, within: float) -> bool:
        """Until an event arrives (True) or ``within`` seconds pass (False)."""
        self._raise_failure()
        try:
            async with asyncio.timeout(within):
                await self._arrived.wait()
        except TimeoutError:
            return False
        self._raise_failure()
        return True

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise QueueError(
                f"the events of broadcast {self.broadcast_id} cannot be followed: {self._error!r}"
            ) from self._error

    def _publish(self, loop: asyncio.AbstractEventLoop) -> None:
        """The events fetched since the last hand-over into the window, and every waiting
        watcher woken."""
        self._publishing = None
        self._published_at = loop.time()
        for item in self._pending:
            self._items.append(item)
            if len(self._items) - self._start > self._window:
                self._evicted_seq = self._items[self._start].seq
                self._start += 1
                if self._start >= self._window:  # compact, amortised O(1)
                    del self._items[: self._start]
                    self._start = 0
        self._pending.clear()
        arrived, self._arrived = self._arrived, asyncio.Event()
        arrived.set()

    async def close(self) -> None:
        if self._publishing is not None:
            self._publishing.cancel()
            self._publishing = None
        # Cancelled again until it ends: a cancellation that lands as a fetch times out can
        # be lost inside the NATS client (``wait_for``'s race on Python 3.11), and the feed
        # would otherwise fetch on forever with its last watcher waiting for it here.
        self._task.cancel()
        while not (await asyncio.wait([self._task], timeout=1.0))[0]:
            logger.warning(
                "a broadcast's event feed missed its cancellation; cancelling it again",
                extra={"broadcast_id": self.broadcast_id},
            )
            self._task.cancel()

    async def _fill(self, queue: EventWatching) -> None:
        try:
            events = queue.watch_from(self.broadcast_id, self._start_seq, batch_size=256)
            async with aclosing(events):
                async for item in events:
                    if isinstance(item, Idle):
                        continue
                    self._pending.append(item)
                    if self._publishing is None:
                        loop = asyncio.get_running_loop()
                        at = max(loop.time(), self._published_at + PUBLISH_EVERY)
                        self._publishing = loop.call_at(at, self._publish, loop)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning(
                "a broadcast's event feed stopped",
                extra={"broadcast_id": self.broadcast_id, "error": repr(exc)},
            )
            self._error = exc
            self._arrived.set()


class EventFeeds:
    """The shared feeds of this process; see the module's docstring."""

    def __init__(self, queue: EventWatching, *, window: int = WINDOW) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self._queue = queue
        self._window = window
        self._feeds: dict[int, _Feed] = {}

    @property
    def consumers(self) -> int:
        """Shared consumers open now (one per watched broadcast)."""
        return len(self._feeds)

    async def watch(
        self, broadcast_id: int, start_seq: int = 1, *, idle_after: float = 1.0
    ) -> AsyncGenerator[Sequenced | Idle, None]:
        """The broadcast's events from stream sequence ``start_seq`` on, in stream order,
        each once, and ``Idle()`` whenever nothing came for ``idle_after`` seconds. Iterate
        it inside ``contextlib.aclosing`` so the watcher leaves its feed on every exit path."""
        async with aclosing(
            self.watch_batches(broadcast_id, start_seq, idle_after=idle_after)
        ) as batches:
            async for batch in batches:
                for item in (batch,) if isinstance(batch, Idle) else batch:
                    yield item

    async def watch_batches(
        self, broadcast_id: int, start_seq: int = 1, *, idle_after: float = 1.0
    ) -> AsyncGenerator[list[Sequenced] | Idle, None]:
        """:meth:`watch`'s events in batches: every event the window holds past the watcher's
        position at once (a watcher's gap read on its own consumer: one by one), never an
        empty batch. What a busy broadcast's watchers read: a step of the generator per
        event per watcher cost as much as the watcher's own work on it."""
        if idle_after <= 0:
            raise ValueError("idle_after must be positive")
        feed = self._feeds.get(broadcast_id)
        if feed is None or feed.failed:  # a failed feed's watchers keep it until they leave
            feed = self._feeds[broadcast_id] = _Feed(
                self._queue, broadcast_id, window=self._window, start_seq=max(1, start_seq)
            )
        feed.watchers += 1
        next_seq = max(1, start_seq)
        try:
            while True:
                items = feed.since(next_seq)
                if items is None:  # behind the window: the gap on a consumer of its own
                    async with aclosing(
                        self._catch_up(feed, next_seq, idle_after=idle_after)
                    ) as gap:
                        async for item in gap:
                            if isinstance(item, Idle):
                                yield item
                            else:
                                next_seq = item.seq + 1
                                yield [item]
                    continue
                if items:
                    next_seq = items[-1].seq + 1
                    yield items
                elif not await feed.wait(idle_after):
                    yield Idle()
        finally:
            feed.watchers -= 1
            if feed.watchers == 0:
                if self._feeds.get(broadcast_id) is feed:
                    del self._feeds[broadcast_id]
                await feed.close()

    async def _catch_up(
        self, feed: _Feed, next_seq: int, *, idle_after: float
    ) -> AsyncGenerator[Sequenced | Idle, None]:
        """A watcher's own consumer from ``next_seq`` until the feed's window has what comes
        next."""
        async with aclosing(
            self._queue.watch_from(feed.broadcast_id, next_seq, idle_after=idle_after)
        ) as events:
            async for item in events:
                if not isinstance(item, Idle):
                    next_seq = item.seq + 1
                yield item
                if feed.since(next_seq) is not None:
                    return
