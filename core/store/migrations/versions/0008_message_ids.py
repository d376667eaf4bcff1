"""Every message a delivery produced: ``deliveries.message_ids``, the ids of an album's
messages in order as a JSON array; NULL when the delivery produced one message (its id is
``message_id``, which stays the first message's).

Nullable with no default: an instant change on a table of millions of rows (SQLite's ``ADD
COLUMN``, PostgreSQL's catalog-only add, MariaDB's instant add).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("message_ids", sa.Text(), nullable=True))


def downgrade() -> None:
    columns = {column["name"] for column in sa.inspect(op.get_bind()).get_columns("deliveries")}
    if "message_ids" not in columns:  # MariaDB: dropped by a downgrade that failed further on
        return
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("message_ids")
