"""Edits (EditBroadcast): ``broadcasts.content_version`` (1 as sent, one more per edit),
``media_version`` (the version whose edit last replaced the media), ``edit_at`` (the last
edit's request), ``editing`` (its recipients are not all edited yet) and ``edited`` (how many
are); ``deliveries.content_version`` (the version its send or last edit was of; NULL: 1),
``deliveries.edit`` (what that edit did: ``edited``, ``not_found``, ``failed``) and
``edit_error`` (Telegram's description of a failed one).

Nullable, or with a constant default: instant changes on tables of millions of rows (SQLite's
``ADD COLUMN``, PostgreSQL's catalog-only add, MariaDB's instant add).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATE_LENGTH = 16
_COLUMNS = {
    "broadcasts": ("content_version", "media_version", "edit_at", "editing", "edited"),
    "deliveries": ("content_version", "edit", "edit_error"),
}


def UtcDateTime() -> sa.types.TypeEngine[datetime]:  # noqa: N802 - reads like the column type
    return (
        sa.DateTime()
        .with_variant(postgresql.TIMESTAMP(timezone=True), "postgresql")
        .with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    )


def upgrade() -> None:
    for name in ("content_version", "media_version"):
        op.add_column(
            "broadcasts",
            sa.Column(name, sa.Integer(), nullable=False, server_default=sa.text("1")),
        )
    op.add_column("broadcasts", sa.Column("edit_at", UtcDateTime(), nullable=True))
    op.add_column(
        "broadcasts", sa.Column("editing", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.add_column(
        "broadcasts",
        sa.Column("edited", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
    )
    op.add_column("deliveries", sa.Column("content_version", sa.Integer(), nullable=True))
    op.add_column("deliveries", sa.Column("edit", sa.String(_STATE_LENGTH), nullable=True))
    op.add_column("deliveries", sa.Column("edit_error", sa.Text(), nullable=True))


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
