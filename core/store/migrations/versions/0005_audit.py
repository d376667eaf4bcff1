"""Who did what: ``broadcasts.created_by`` (the API token's name; '' for existing rows) and
``broadcast_actions``, one row per pause, resume or cancel with its actor and time.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MYSQL: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_unicode_ci",
}
STATE_LENGTH = 16
ACTOR_LENGTH = 64


def UtcDateTime() -> sa.types.TypeEngine[datetime]:  # noqa: N802 - reads like the column type
    return (
        sa.DateTime()
        .with_variant(postgresql.TIMESTAMP(timezone=True), "postgresql")
        .with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    )


def upgrade() -> None:
    with op.batch_alter_table("broadcasts") as batch:
        batch.add_column(
            sa.Column("created_by", sa.String(ACTOR_LENGTH), nullable=False, server_default="")
        )
    op.create_table(
        "broadcast_actions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("broadcast_id", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.String(STATE_LENGTH), nullable=False),
        sa.Column("actor", sa.String(ACTOR_LENGTH), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["broadcast_id"],
            ["broadcasts.id"],
            name="fk_broadcast_actions_broadcast_id",
            ondelete="CASCADE",
        ),
        sa.Index("ix_broadcast_actions_broadcast_id", "broadcast_id", "id"),
        sqlite_autoincrement=True,
        **MYSQL,
    )


def downgrade() -> None:
    op.drop_table("broadcast_actions")
    with op.batch_alter_table("broadcasts") as batch:
        batch.drop_column("created_by")
