"""Long flood waits: ``broadcasts.throttled_until``, until when the bot's sending is parked
by a 429 whose ``retry_after`` exceeded ``worker.park_after`` (set on its unfinished
broadcasts; past values mean nothing).

Nullable with no default: an instant change.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def UtcDateTime() -> sa.types.TypeEngine[datetime]:  # noqa: N802 - reads like the column type
    return (
        sa.DateTime()
        .with_variant(postgresql.TIMESTAMP(timezone=True), "postgresql")
        .with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    )


def upgrade() -> None:
    op.add_column("broadcasts", sa.Column("throttled_until", UtcDateTime(), nullable=True))


def downgrade() -> None:
    columns = {column["name"] for column in sa.inspect(op.get_bind()).get_columns("broadcasts")}
    if "throttled_until" not in columns:  # MariaDB: dropped by a downgrade that failed further on
        return
    with op.batch_alter_table("broadcasts") as batch:
        batch.drop_column("throttled_until")
