"""The complete API: lifecycle, idempotency, audiences, rich content, user tags, webhooks,
per-recipient claims (``deliveries.claimed_by/claimed_until``).

Also drops the foreign key from deliveries to broadcasts: broadcasts are never deleted, and
checking it cost about 8 s per million recipients on PostgreSQL's bulk path.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MYSQL: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_unicode_ci",
}
STATE_LENGTH = 16


def UtcDateTime() -> sa.types.TypeEngine[datetime]:  # noqa: N802 - reads like the column type
    return (
        sa.DateTime()
        .with_variant(postgresql.TIMESTAMP(timezone=True), "postgresql")
        .with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    )


def upgrade() -> None:
    with op.batch_alter_table("broadcasts") as batch:
        batch.add_column(sa.Column("send_at", UtcDateTime(), nullable=True))
        batch.add_column(sa.Column("started_at", UtcDateTime(), nullable=True))
        # The last resume of a paused broadcast: it names the generation of its jobs.
        batch.add_column(sa.Column("resumed_at", UtcDateTime(), nullable=True))
        batch.add_column(sa.Column("idempotency_key", sa.String(255), nullable=True))
        batch.add_column(sa.Column("request_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("audience", sa.Text(), nullable=True))
        batch.add_column(sa.Column("options", sa.Text(), nullable=True))
        batch.add_column(sa.Column("callback_url", sa.Text(), nullable=True))
        batch.add_column(sa.Column("callback_state", sa.String(STATE_LENGTH), nullable=True))
        batch.add_column(sa.Column("callback_attempts", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("callback_next_at", UtcDateTime(), nullable=True))
        batch.create_index("ix_broadcasts_status", ["status", "id"])
        batch.create_index("ix_broadcasts_callback_state", ["callback_state"])
        batch.create_unique_constraint("uq_broadcasts_idempotency_key", ["idempotency_key"])
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("blocked_reason", sa.String(STATE_LENGTH), nullable=True))
        batch.add_column(sa.Column("blocked_at", UtcDateTime(), nullable=True))
    op.create_index(
        "ix_users_language_code", "users", ["language_code"], mysql_length={"language_code": 16}
    )
    op.create_table(
        "user_tags",
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("tag", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "tag"),
        sa.Index("ix_user_tags_tag", "tag", "user_id"),
        **MYSQL,
    )
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_constraint("fk_deliveries_broadcast_id", type_="foreignkey")
        # Per-recipient claims: the job holding a pending recipient, and until when.
        batch.add_column(sa.Column("claimed_by", sa.String(32), nullable=True))
        batch.add_column(sa.Column("claimed_until", UtcDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("claimed_until")
        batch.drop_column("claimed_by")
        batch.create_foreign_key(
            "fk_deliveries_broadcast_id", "broadcasts", ["broadcast_id"], ["id"], ondelete="CASCADE"
        )
    op.drop_table("user_tags")
    op.drop_index("ix_users_language_code", table_name="users")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("blocked_at")
        batch.drop_column("blocked_reason")
    with op.batch_alter_table("broadcasts") as batch:
        batch.drop_constraint("uq_broadcasts_idempotency_key", type_="unique")
        batch.drop_index("ix_broadcasts_callback_state")
        batch.drop_index("ix_broadcasts_status")
        batch.drop_column("callback_next_at")
        batch.drop_column("callback_attempts")
        batch.drop_column("callback_state")
        batch.drop_column("callback_url")
        batch.drop_column("options")
        batch.drop_column("audience")
        batch.drop_column("request_hash")
        batch.drop_column("idempotency_key")
        batch.drop_column("resumed_at")
        batch.drop_column("started_at")
        batch.drop_column("send_at")
