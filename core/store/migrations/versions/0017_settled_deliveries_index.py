"""``ix_deliveries_state`` holding only settled recipients on PostgreSQL and SQLite (a partial
index, ``WHERE state <> 'pending'``; MariaDB has none and keeps the whole one).

Every recipient a broadcast inserts is ``pending``, and every query for pending recipients
names them by id (a job's claim, its outcomes' recording) or walks the broadcast in id order
(dispatch, a report of every state): the primary key ``(broadcast_id, user_id)`` serves all of
them. The index serves the settled side — counts by outcome, reports of some outcomes, the sent
recipients an edit or a recall walks — and a recipient enters it when its outcome is recorded
instead of twice (inserted pending, moved when settled). A million new recipients were
accepted in 4.5-5.6 s on PostgreSQL with the whole index and 3.5-3.7 s with this one, 2.2 s and
1.9-2.0 s on SQLite (``python -m bench.accept``, docs/profiles.md). It also takes away the plan
PostgreSQL fell to before a new broadcast's statistics (a claim of a hundred ids reading every
pending recipient through this index, :mod:`tgbroadcast.core.store.statistics`).

On PostgreSQL writes to ``deliveries`` wait while the index is built (about half a second
per million settled recipients on the benchmarks' machine).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PARTIAL = ("postgresql", "sqlite")


def upgrade() -> None:
    if op.get_bind().dialect.name in _PARTIAL:
        _replace_state_index(sa.text("state <> 'pending'"))


def downgrade() -> None:
    if op.get_bind().dialect.name in _PARTIAL:
        _replace_state_index(None)


def _replace_state_index(where: sa.TextClause | None) -> None:
    op.drop_index("ix_deliveries_state", table_name="deliveries")
    op.create_index(
        "ix_deliveries_state",
        "deliveries",
        ["broadcast_id", "state", "user_id"],
        postgresql_where=where,
        sqlite_where=where,
    )
