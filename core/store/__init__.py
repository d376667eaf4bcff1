"""The SQL store: users, broadcasts and per-recipient deliveries (the service's truth).

``Store.open(url)`` accepts ``sqlite+aiosqlite:///path``, ``postgresql+asyncpg://...`` and
``mysql+asyncmy://...``; :mod:`tgbroadcast.core.store.store` states the guarantees.

* :mod:`.store` — ``Store``: the one object the rest of the service holds, and its guarantees.
* :mod:`.tables` — the SQL schema, as SQLAlchemy Core tables (the migrations build it).
* :mod:`.engine` — engines for the three backends, tuned to behave alike; schema migration.
* :mod:`.sqlite_driver` — SQLite's cursor: a statement in one hand-off to aiosqlite's thread.
* :mod:`.checkpoints` — SQLite's WAL checkpointed by a task of the store's, not in commits.
* :mod:`.statistics` — PostgreSQL's planner statistics refreshed after a big broadcast.
* :mod:`.dialects` — the few statements and errors that differ between the backends.
* :mod:`.limits` — how much one statement may carry, under every backend's limits.
* :mod:`.users` — ``users`` and ``user_tags``: upserts, deactivation, paging, reading, deleting.
* :mod:`.user_rows` — ``Store``'s methods for a bot's users (a mixin, as the ``*Rows`` are).
* :mod:`.profiles` — recipients' profiles for personalization, one query per job batch.
* :mod:`.audiences` — which users a ``UserFilter`` selects, as SQL on ``users``.
* :mod:`.broadcasts` — ``broadcasts``: creation with its deliveries, reading, dispatch
  bookkeeping.
* :mod:`.bulk` — a new broadcast's deliveries, written in bulk.
* :mod:`.grouping` — group commit: small new broadcasts arriving together in one transaction.
* :mod:`.creations` — such a group's writes: each row, then all their recipients at once.
* :mod:`.transitions` — a broadcast's lifecycle moves, listing, idempotency keys and the
  dispatch of a generation of jobs.
* :mod:`.dispatching` — many small broadcasts dispatched at once: one read, one transaction.
* :mod:`.actions` — ``broadcast_actions``: who paused, resumed or cancelled a broadcast, when.
* :mod:`.deliveries` — ``deliveries``: pending recipients, claims for a job, recorded results.
* :mod:`.finals` — a chunk of results written to their deliveries while still pending.
* :mod:`.counters` — a broadcast's counters and completion as its outcomes are recorded.
* :mod:`.variant_counts` — a broadcast's settled recipients per variant and outcome, kept as
  they are recorded.
* :mod:`.followups` — what recall and edit jobs share: holding sent recipients, batches.
* :mod:`.recalls` — a recall's deliveries: holding, recording, the move to ``recalled``.
* :mod:`.edits` — an edit: the new content, its deliveries' holding and recording, its end.
* :mod:`.sending` — what workers keep beside outcomes: media file_ids, a bot's park.
* :mod:`.callbacks` — the completion webhook's columns of ``broadcasts``.
* :mod:`.bots` — ``bots``: the bots created through the API, their tokens sealed.
* :mod:`.quota` — recipients not yet final and audience sizes, for
  ``server.max_pending_recipients``.
* :mod:`.migrations` — the Alembic environment and versions ``Store.migrate()`` runs.

May import: :mod:`tgbroadcast.core.domain`, :mod:`tgbroadcast.core.tasks`.
"""

from __future__ import annotations

from tgbroadcast.core.store.deliveries import Claimed, Recorded
from tgbroadcast.core.store.dispatching import SmallBroadcast
from tgbroadcast.core.store.edits import EditResult
from tgbroadcast.core.store.engine import create_engine
from tgbroadcast.core.store.followups import SentClaim, SentTarget
from tgbroadcast.core.store.recalls import RecallResult
from tgbroadcast.core.store.store import MAX_ATTEMPTS, Store

__all__ = [
    "MAX_ATTEMPTS",
    "Claimed",
    "EditResult",
    "RecallResult",
    "Recorded",
    "SentClaim",
    "SentTarget",
    "SmallBroadcast",
    "Store",
    "create_engine",
]
