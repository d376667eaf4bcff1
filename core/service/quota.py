"""``server.max_pending_recipients``: a send that would take the recipients not yet final, over
all broadcasts of every bot, above the limit is refused with :class:`ResourceExhausted`,
nothing written.

The count is the store's cheap one (broadcast counters, never ``deliveries``, see
:mod:`tgbroadcast.core.store.quota`). Within one process, sends being written hold a
*reservation*: under a short :class:`asyncio.Lock` a send checks ``pending + reserved + size``
against the limit and adds its size to ``reserved``; the lock is released before the (possibly
slow: seconds for a million recipients) upload and write, so a large send never blocks an
unrelated small one, and concurrent sends still cannot all pass on the same count. The
reservation is dropped only after the write has committed (or failed), so for a moment a
committed send counts twice: the error is on the side of refusing, never of overshooting.

While the count is far below the limit — the last count, plus every send admitted here since,
plus this one, at most half the limit — and at most :data:`FRESH` seconds old, a send is
admitted without counting again: the busy path (many small sends, far from the limit) does not
read the database, nor queue behind another send's count, for every send. Near the limit every
send counts.

Across several server processes on one database the reservations are not shared: each process
may admit, at the same moment, sends checked against the same count, so the total may exceed
the limit by at most what the other processes create concurrently (each send still at most
``server.max_user_ids`` recipients, or the size of the user base for ``all_users``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tgbroadcast.core.domain.errors import ResourceExhausted
from tgbroadcast.core.domain.model import NewBroadcast
from tgbroadcast.core.store import Store

FRESH = 1.0
"""Seconds a count far below the limit is trusted (see the module's docstring)."""


class PendingRecipientsQuota:
    """The limit (None: none), the recipients reserved by sends being written in this process,
    and the lock that makes check-and-reserve atomic."""

    def __init__(self, store: Store, limit: int | None, *, fresh: float = FRESH) -> None:
        self._store = store
        self._limit = limit
        self._fresh = fresh
        self._lock = asyncio.Lock()
        self._reserved = 0
        self._counted: int | None = None
        """The store's count at the last check (None: none yet)."""
        self._counted_at = 0.0
        self._admitted_since = 0
        """Recipients of the sends admitted since that count (written or not: counted)."""

    @property
    def reserved(self) -> int:
        """Recipients of the sends admitted in this process and not yet written."""
        return self._reserved

    async def size(self, new: NewBroadcast) -> int:
        """The recipients ``new`` would have now (its audience counted among its bot's
        users); 0 when no limit applies, so nothing is counted in vain."""
        if self._limit is None:
            return 0
        if new.all_users or new.filter is not None:
            return await self._store.audience_size(new.filter, bot=new.bot)
        return len(new.user_ids)  # already distinct (validate_send)

    async def check(self, size: int) -> None:
        """:class:`ResourceExhausted` if ``size`` more recipients, on top of those not yet
        final in the store and those reserved here, would exceed the limit."""
        if self._limit is None or not size:
            return
        # Reserved first: a reservation dropped during the query below belongs to a write in
        # ``reserved`` (and in the count too if it committed before the query's snapshot:
        # counted twice at worst, never 0). The sends admitted since are counted from here,
        # not from the query's end: one that ends during the query may not be in its count
        # (three sends committing as one group while the count was read were lost so, and
        # the next send admitted as if far below the limit).
        reserved = self._reserved
        self._admitted_since = 0
        counted = await self._store.pending_recipients()
        self._counted, self._counted_at = counted, time.monotonic()
        pending = counted + reserved
        if pending + size > self._limit:
            raise ResourceExhausted(
                f"{size} more recipients would take those not yet final from {pending} above "
                f"server.max_pending_recipients ({self._limit}); wait for broadcasts to finish, "
                "or cancel some"
            )

    @asynccontextmanager
    async def admitting(self, size: int) -> AsyncIterator[None]:
        """Checks and reserves ``size`` (:class:`ResourceExhausted`: nothing reserved), then
        holds the reservation, not the lock, while the caller uploads and writes the
        broadcast; released when the block ends, after the write has committed."""
        if self._limit is None or not size:
            yield
            return
        async with self._lock:
            if not self._far_below(size):
                await self.check(size)
            self._reserved += size
        try:
            yield
        finally:
            self._reserved -= size
            self._admitted_since += size

    def _far_below(self, size: int) -> bool:
        """Whether the last count, recent, leaves room for twice everything since and this."""
        if self._limit is None or self._counted is None:
            return False
        if time.monotonic() - self._counted_at >= self._fresh:
            return False
        upper = self._counted + self._admitted_since + self._reserved + size
        return 2 * upper <= self._limit
