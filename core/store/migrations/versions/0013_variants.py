"""Variants: ``broadcasts.variants`` (JSON: each variant's name, weight, language codes and
content; NULL when a broadcast has none; MEDIUMTEXT on MySQL/MariaDB, since ten full
contents may pass the 64 KiB of ``TEXT``) and ``deliveries.variant`` (the name of the
variant a recipient's send was of).

Nullable columns: instant changes.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = {"broadcasts": "variants", "deliveries": "variant"}


def upgrade() -> None:
    op.add_column(
        "broadcasts",
        sa.Column(
            "variants",
            sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb"),
            nullable=True,
        ),
    )
    op.add_column("deliveries", sa.Column("variant", sa.String(32), nullable=True))


def downgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    for table, column in _COLUMNS.items():
        if column in {c["name"] for c in inspector.get_columns(table)}:  # MariaDB: a failed one
            with op.batch_alter_table(table) as batch:
                batch.drop_column(column)
