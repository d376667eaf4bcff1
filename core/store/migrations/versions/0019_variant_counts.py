"""A broadcast's settled recipients per variant and outcome: ``variant_counts``, added to by the
transaction that records them, so GetBroadcast of a broadcast with variants no longer groups its
deliveries by variant and state at every call.

A new table: an instant change. Broadcasts with outcomes recorded before it have no rows (or too
few: their counts do not add up to ``sent + failed``) and are counted from their deliveries as
before; so is a broadcast with outcomes recorded by a worker of the previous release during a
rollout.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "variant_counts",
        sa.Column("broadcast_id", sa.BigInteger(), nullable=False),
        sa.Column("variant", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("broadcast_id", "variant", "state"),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_unicode_ci",
    )


def downgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("variant_counts"):
        op.drop_table("variant_counts")
