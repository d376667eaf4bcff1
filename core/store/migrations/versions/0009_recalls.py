"""Recalls: ``broadcasts.recall_at`` (when RecallBroadcast was asked for) and
``broadcasts.recalled`` (recipients whose recall has its outcome), ``deliveries.recall`` (what
the recall did to the recipient's messages: ``deleted``, ``too_old``, ``not_found``,
``failed``) and ``deliveries.recall_error`` (Telegram's description of a failed one).

Nullable, or with a constant default: instant changes on tables of millions of rows (SQLite's
``ADD COLUMN``, PostgreSQL's catalog-only add, MariaDB's instant add).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATE_LENGTH = 16
_COLUMNS = {
    "broadcasts": ("recall_at", "recalled"),
    "deliveries": ("recall", "recall_error"),
}


def UtcDateTime() -> sa.types.TypeEngine[datetime]:  # noqa: N802 - reads like the column type
    return (
        sa.DateTime()
        .with_variant(postgresql.TIMESTAMP(timezone=True), "postgresql")
        .with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    )


def upgrade() -> None:
    op.add_column("broadcasts", sa.Column("recall_at", UtcDateTime(), nullable=True))
    op.add_column(
        "broadcasts",
        sa.Column("recalled", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
    )
    op.add_column("deliveries", sa.Column("recall", sa.String(_STATE_LENGTH), nullable=True))
    op.add_column("deliveries", sa.Column("recall_error", sa.Text(), nullable=True))


def downgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    for table, names in _COLUMNS.items():
        present = {column["name"] for column in inspector.get_columns(table)}
        left = [name for name in names if name in present]  # MariaDB: a failed downgrade
        if not left:
            continue
        with op.batch_alter_table(table) as batch:
            for name in left:
                batch.drop_column(name)
