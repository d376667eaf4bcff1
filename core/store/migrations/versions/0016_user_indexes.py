"""``users``' secondary indexes cut to what is asked of them: ``ix_users_active`` dropped, and
``ix_users_language_code`` holding only the users with a language code on PostgreSQL and
SQLite (a partial index; MariaDB has none and keeps the whole one).

Every new recipient of a broadcast gets a user row (active, no profile), and each was an entry
in both indexes that no query reads: the store only ever selects *active* users, nearly all of
them, in id order through the primary key ``(bot, id)``, and a filter's ``language_code IN
(..)`` never selects NULL. A million new recipients' user rows took 2.4 s to insert on
PostgreSQL, 0.55 s of it each of these two indexes (``python -m bench.accept`` and
``EXPLAIN ANALYZE``). Counting a bot's active users (only with ``max_pending_recipients`` set, for a
send to all users or a filter) reads the bot's rows instead of an index.

On PostgreSQL writes to ``users`` wait while the partial index is built (seconds for millions of
users with a language code).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PARTIAL = ("postgresql", "sqlite")


def upgrade() -> None:
    op.drop_index("ix_users_active", table_name="users")
    if op.get_bind().dialect.name in _PARTIAL:
        _replace_language_index(sa.text("language_code IS NOT NULL"))


def downgrade() -> None:
    if op.get_bind().dialect.name in _PARTIAL:
        _replace_language_index(None)
    op.create_index("ix_users_active", "users", ["bot", "active"])


def _replace_language_index(where: sa.TextClause | None) -> None:
    op.drop_index("ix_users_language_code", table_name="users")
    op.create_index(
        "ix_users_language_code",
        "users",
        ["bot", "language_code"],
        postgresql_where=where,
        sqlite_where=where,
    )
