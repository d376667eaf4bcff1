"""Stars budgets of paid broadcasts: ``broadcasts.max_stars`` (the budget; NULL: none),
``stars_spent_milli`` (the estimated spend of its paid sends, in thousandths of a Star) and
``paid_stopped_at`` (when the budget was spent and its paid sending stopped).

Nullable, or with a constant default: instant changes.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ("max_stars", "stars_spent_milli", "paid_stopped_at")


def UtcDateTime() -> sa.types.TypeEngine[datetime]:  # noqa: N802 - reads like the column type
    return (
        sa.DateTime()
        .with_variant(postgresql.TIMESTAMP(timezone=True), "postgresql")
        .with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    )


def upgrade() -> None:
    op.add_column("broadcasts", sa.Column("max_stars", sa.BigInteger(), nullable=True))
    op.add_column(
        "broadcasts",
        sa.Column(
            "stars_spent_milli", sa.BigInteger(), nullable=False, server_default=sa.text("0")
        ),
    )
    op.add_column("broadcasts", sa.Column("paid_stopped_at", UtcDateTime(), nullable=True))


def downgrade() -> None:
    present = {column["name"] for column in sa.inspect(op.get_bind()).get_columns("broadcasts")}
    left = [name for name in _COLUMNS if name in present]  # MariaDB: a failed downgrade
    if not left:
        return
    with op.batch_alter_table("broadcasts") as batch:
        for name in left:
            batch.drop_column(name)
