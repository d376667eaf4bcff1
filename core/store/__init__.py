"""The SQL store: users, broadcasts and per-recipient deliveries (the service's truth).

``Store.open(url)`` accepts ``sqlite+aiosqlite:///path``, ``postgresql+asyncpg://...`` and
``mysql+asyncmy://...``; :mod:`tgbroadcast.core.store.store` states the guarantees.

May import: :mod:`tgbroadcast.core.domain`.
"""

from __future__ import annotations

from tgbroadcast.core.store.deliveries import Claimed, Recorded
from tgbroadcast.core.store.engine import create_engine
from tgbroadcast.core.store.store import MAX_ATTEMPTS, Store

__all__ = ["MAX_ATTEMPTS", "Claimed", "Recorded", "Store", "create_engine"]
