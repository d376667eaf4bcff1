"""The SQL store: users, broadcasts and per-recipient deliveries (the service's truth).

``Store.open(url)`` accepts ``sqlite+aiosqlite:///path``, ``postgresql+asyncpg://...`` and
``mysql+asyncmy://...``; :mod:`broadcasting.store.store` states the guarantees.
"""

from __future__ import annotations

from .deliveries import Claimed, Recorded
from .engine import create_engine
from .store import MAX_ATTEMPTS, Store

__all__ = ["MAX_ATTEMPTS", "Claimed", "Recorded", "Store", "create_engine"]
