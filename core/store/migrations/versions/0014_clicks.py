"""Click tracking: ``broadcasts.click_key`` (the key signing a tracked broadcast's link codes,
hex; NULL: not tracked) and ``click_base`` (the public address its links lead through), and
``clicks``: one row per recipient and link opened (its first time), with the recipient's
variant.

Nullable columns and a new table: instant changes.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ("click_key", "click_base")


def UtcDateTime() -> sa.types.TypeEngine[datetime]:  # noqa: N802 - reads like the column type
    return (
        sa.DateTime()
        .with_variant(postgresql.TIMESTAMP(timezone=True), "postgresql")
        .with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    )


def upgrade() -> None:
    op.add_column("broadcasts", sa.Column("click_key", sa.String(64), nullable=True))
    op.add_column("broadcasts", sa.Column("click_base", sa.Text(), nullable=True))
    op.create_table(
        "clicks",
        sa.Column("broadcast_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("link", sa.Integer(), nullable=False),
        sa.Column("variant", sa.String(32), nullable=True),
        sa.Column("clicked_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("broadcast_id", "user_id", "link"),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_unicode_ci",
    )


def downgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if inspector.has_table("clicks"):
        op.drop_table("clicks")
    present = {column["name"] for column in inspector.get_columns("broadcasts")}
    left = [name for name in _COLUMNS if name in present]
    if left:
        with op.batch_alter_table("broadcasts") as batch:
            for name in left:
                batch.drop_column(name)
