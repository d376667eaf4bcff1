"""Watching the list of broadcasts: each one as it is created, moves, and counts outcomes.

:meth:`ListWatching.watch` is what ``WatchBroadcasts`` and ``GET /v1/broadcasts/events``
stream. It first yields :data:`READY` — from then on every change is streamed, so a client
reads the list (``ListBroadcasts``) after it, and again after every reconnect — then each
changed broadcast as SQL has it (the truth: a change notice only says which one changed, see
:mod:`tgbroadcast.core.queue.changes`), filtered to the caller's bots and the watch's filter.

Guarantees:

* **One subscription and one reading per process**, however many watchers: a notice is read
  from SQL once (with the broadcast's actions, as a list shows it) and the same broadcast
  handed to every watcher that wants it. The subscription is made for the first watcher and
  dropped with the last one.
* **A bounded rate.** A creation or a move is read at once. Counted outcomes (a worker's notice
  per group commit) are read at most once per ``progress_interval`` seconds per broadcast (one
  second): with any number of workers and broadcasts, a list moves smoothly and the database
  sees at most one read per sending broadcast per second per API server. The last notice is
  always read, so a list ends with the final counters.
* **Slow watchers hold nothing up** and cost a slot per broadcast: a watcher that has not taken
  a broadcast yet gets only its latest state (the updates of one broadcast replace each other
  while they wait); updates come in the order their broadcasts last changed.
* A watch's ``statuses`` filter takes the broadcasts whose new status is one of them: a
  broadcast that leaves them is not streamed (to follow a filtered list, watch without
  ``statuses`` and filter). Without a caller's bot (``visible``) nothing of it is streamed.
* Notices are delivered at most once (a NATS outage loses those published meanwhile); a read
  that fails (the database unreachable) is tried again ``progress_interval`` later.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Final

import nats.errors
from nats.aio.subscription import Subscription

from tgbroadcast.core.domain.errors import InvalidArgument, NotFound, QueueError
from tgbroadcast.core.domain.model import Broadcast, BroadcastStatus
from tgbroadcast.core.queue import Change, ChangeKind, Queue
from tgbroadcast.core.service.bot_access import Visible, may_see
from tgbroadcast.core.service.controls import list_filter
from tgbroadcast.core.store import Store
from tgbroadcast.core.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL: Final = 1.0
"""Seconds between two reads of a broadcast for its counted outcomes (per process)."""
_READS_AT_ONCE: Final = 32
_REMEMBERED: Final = 4096
"""Broadcasts whose last read time is kept before old ones are forgotten."""


@dataclass(frozen=True, slots=True)
class Ready:
    """The watch is open: every change from now on is streamed."""


READY: Final = Ready()


class _Watcher:
    """One watch: its filter and the broadcasts waiting for it (latest state each)."""

    def __init__(self, visible: Visible, bot: str, statuses: frozenset[BroadcastStatus]) -> None:
        self.visible = visible
        self.bot = bot
        self.statuses = statuses
        self.waiting: OrderedDict[int, Broadcast] = OrderedDict()
        self.arrived = asyncio.Event()
        self.error: BaseException | None = None

    def sees(self, bot: str) -> bool:
        return may_see(self.visible, bot) and (not self.bot or bot == self.bot)

    def offer(self, broadcast: Broadcast) -> None:
        if not self.sees(broadcast.bot):
            return
        if self.statuses and broadcast.status not in self.statuses:
            return
        self.waiting.pop(broadcast.id, None)
        self.waiting[broadcast.id] = broadcast
        self.arrived.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.arrived.set()


class ListWatching:
    """The list watches of this process; see the module's docstring."""

    def __init__(
        self, store: Store, queue: Queue, *, progress_interval: float = PROGRESS_INTERVAL
    ) -> None:
        if progress_interval <= 0:
            raise ValueError("progress_interval must be positive")
        self._store = store
        self._queue = queue
        self._interval = progress_interval
        self._watchers: set[_Watcher] = set()
        self._lock = asyncio.Lock()
        self._subscription: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._due: dict[int, float] = {}
        """Broadcasts to read, by when (monotonic seconds)."""
        self._read_at: dict[int, float] = {}
        self._wake = asyncio.Event()

    @property
    def watchers(self) -> int:
        return len(self._watchers)

    async def watch(
        self, *, visible: Visible = None, bot: str = "", statuses: Sequence[str] = ()
    ) -> AsyncGenerator[Ready | Broadcast, None]:
        """:data:`READY`, then every broadcast of ``visible`` bots (only ``bot``'s when given,
        only those that moved to one of ``statuses`` when given) as it changes.
        ``InvalidArgument`` (at the first step) for a malformed bot name or an unknown
        status; ``QueueError`` when NATS cannot be subscribed to."""
        wanted, violations = list_filter(bot, statuses)
        if violations:
            raise InvalidArgument(violations)
        watcher = _Watcher(visible, bot, wanted)
        await self._join(watcher)
        try:
            yield READY
            while True:
                await watcher.arrived.wait()
                watcher.arrived.clear()
                if watcher.error is not None:
                    raise QueueError(f"the list cannot be followed: {watcher.error!r}")
                while watcher.waiting:
                    _, broadcast = watcher.waiting.popitem(last=False)
                    yield broadcast
        finally:
            await self._leave(watcher)

    async def _join(self, watcher: _Watcher) -> None:
        async with self._lock:
            if self._task is not None and self._task.done():  # it failed: start afresh
                self._task = asyncio.create_task(self._read(), name="list-watching")
            if self._subscription is None:
                try:
                    self._subscription = await self._queue.subscribe_changes(self._noticed)
                except (nats.errors.Error, OSError, TimeoutError) as exc:
                    raise QueueError(f"cannot follow the change notices: {exc!r}") from exc
                self._task = asyncio.create_task(self._read(), name="list-watching")
            self._watchers.add(watcher)

    async def _leave(self, watcher: _Watcher) -> None:
        async with self._lock:
            self._watchers.discard(watcher)
            if self._watchers or self._subscription is None:
                return
            subscription, self._subscription = self._subscription, None
            task, self._task = self._task, None
            self._due.clear()
            await cancel_and_wait(task)
            try:
                await subscription.unsubscribe()
            except (nats.errors.Error, OSError) as exc:
                logger.debug("unsubscribing from change notices failed: %r", exc)

    def _noticed(self, change: Change) -> None:
        """A notice arrived: its broadcast is read at once, or (counted outcomes) once a
        ``progress_interval`` has passed since its last read."""
        if not any(watcher.sees(change.bot) for watcher in self._watchers):
            return
        now = time.monotonic()
        due = now
        if change.kind is ChangeKind.PROGRESS:
            due = max(now, self._read_at.get(change.broadcast_id, -self._interval) + self._interval)
        current = self._due.get(change.broadcast_id)
        self._due[change.broadcast_id] = due if current is None else min(current, due)
        self._wake.set()

    async def _read(self) -> None:
        try:
            while True:
                now = time.monotonic()
                ready = sorted((due, i) for i, due in self._due.items() if due <= now)
                if not ready:
                    self._wake.clear()
                    wait = min(self._due.values(), default=now + 3600.0) - now
                    try:
                        async with asyncio.timeout(wait):
                            await self._wake.wait()
                    except TimeoutError:
                        pass
                    continue
                ids = [i for _, i in ready[:_READS_AT_ONCE]]
                for broadcast_id in ids:
                    del self._due[broadcast_id]
                    self._read_at[broadcast_id] = now
                read = await asyncio.gather(*(self._read_one(i) for i in ids))
                for broadcast in read:
                    if broadcast is not None:
                        for watcher in list(self._watchers):
                            watcher.offer(broadcast)
                self._forget(now)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: every watcher ends, the next one starts afresh
            logger.exception("following the list of broadcasts failed")
            for watcher in list(self._watchers):
                watcher.fail(exc)

    async def _read_one(self, broadcast_id: int) -> Broadcast | None:
        try:
            return await self._store.get_broadcast(broadcast_id, actions=True)
        except NotFound:
            return None
        except Exception as exc:
            logger.warning(
                "reading a changed broadcast failed; trying again",
                extra={"broadcast_id": broadcast_id, "error": repr(exc)},
            )
            due = time.monotonic() + self._interval
            self._due[broadcast_id] = min(self._due.get(broadcast_id, due), due)
            return None

    def _forget(self, now: float) -> None:
        """Drop the read times that no longer hold a read back."""
        if len(self._read_at) > _REMEMBERED:
            horizon = now - self._interval
            self._read_at = {i: t for i, t in self._read_at.items() if t > horizon}
