"""``server.max_pending_recipients``: a send that would take the recipients not yet final, over
all broadcasts, above the limit is refused with :class:`ResourceExhausted`, nothing written.

The count is the store's cheap one (broadcast counters, never ``deliveries``, see
:mod:`tgbroadcast.core.store.quota`). Within one process, the check and the write of the
broadcast are serialised (an :class:`asyncio.Lock`), so concurrent sends cannot all pass on the
same count. Across several server processes on one database they are not: each process may
admit, at the same moment, sends checked against the same count, so the total may exceed the
limit by at most what the other processes create concurrently (each send still at most
``server.max_user_ids`` recipients, or the size of the user base for ``all_users``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tgbroadcast.core.domain.errors import ResourceExhausted
from tgbroadcast.core.domain.model import NewBroadcast
from tgbroadcast.core.store import Store


class PendingRecipientsQuota:
    """The limit (None: none) and the lock serialising check and write in this process."""

    def __init__(self, store: Store, limit: int | None) -> None:
        self._store = store
        self._limit = limit
        self._lock = asyncio.Lock()

    async def size(self, new: NewBroadcast) -> int:
        """The recipients ``new`` would have now (its audience counted on ``users``); 0 when
        no limit applies, so nothing is counted in vain."""
        if self._limit is None:
            return 0
        if new.all_users or new.filter is not None:
            return await self._store.audience_size(new.filter)
        return len(set(new.user_ids))

    async def check(self, size: int) -> None:
        """:class:`ResourceExhausted` if ``size`` more recipients would exceed the limit."""
        if self._limit is None or not size:
            return
        pending = await self._store.pending_recipients()
        if pending + size > self._limit:
            raise ResourceExhausted(
                f"{size} more recipients would take those not yet final from {pending} above "
                f"server.max_pending_recipients ({self._limit}); wait for broadcasts to finish, "
                "or cancel some"
            )

    @asynccontextmanager
    async def admitting(self, size: int) -> AsyncIterator[None]:
        """Checks ``size`` and holds the lock while the caller writes the broadcast."""
        if self._limit is None or not size:
            yield
            return
        async with self._lock:
            await self.check(size)
            yield
