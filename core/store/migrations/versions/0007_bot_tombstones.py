"""A deleted bot keeps its row as a tombstone: ``bots.deleted_at`` set, its sealed token and
token hash wiped. Its name stays tied to its Telegram bot id, so the users and broadcasts
kept under the name are never handed to another bot that takes the name later.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def UtcDateTime() -> sa.types.TypeEngine[datetime]:  # noqa: N802 - reads like the column type
    return (
        sa.DateTime()
        .with_variant(postgresql.TIMESTAMP(timezone=True), "postgresql")
        .with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    )


def upgrade() -> None:
    with op.batch_alter_table("bots") as batch:
        batch.add_column(sa.Column("deleted_at", UtcDateTime(), nullable=True))


def downgrade() -> None:
    columns = {column["name"] for column in sa.inspect(op.get_bind()).get_columns("bots")}
    if "deleted_at" not in columns:  # MariaDB: dropped by a downgrade that failed further on
        return
    op.execute(sa.text("DELETE FROM bots WHERE deleted_at IS NOT NULL"))
    with op.batch_alter_table("bots") as batch:
        batch.drop_column("deleted_at")
