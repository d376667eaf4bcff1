"""The file_ids of variants' media: ``variant_file_ids`` holds, per broadcast and variant
position (1 and up: the first variant's is ``broadcasts.file_id``), the file_id Telegram gave
its media at its first send, so every worker sends it by file_id (an upload's bytes are kept
only for a week).

A new table: an instant change.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "variant_file_ids",
        sa.Column("broadcast_id", sa.BigInteger(), nullable=False),
        sa.Column("variant", sa.Integer(), nullable=False),
        sa.Column("file_id", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("broadcast_id", "variant"),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_unicode_ci",
    )


def downgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("variant_file_ids"):
        op.drop_table("variant_file_ids")
