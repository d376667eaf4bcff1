"""A broadcast's recipients per failure outcome, counted on its row: ``broadcasts.count_blocked``,
``count_deactivated``, ``count_cant_initiate``, ``count_kicked``, ``count_chat_not_found``,
``count_bad_request`` and ``count_failed`` (with ``sent``, every outcome's count: GetBroadcast
no longer groups the broadcast's deliveries by state at every call).

Nullable with no default: an instant change. Broadcasts created before it keep NULL, and their
outcomes are counted from their deliveries as before (recording adds nothing to a NULL); so is a
broadcast whose counts do not add up to ``failed`` (outcomes recorded by a worker of the previous
release during a rollout).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    "count_blocked",
    "count_deactivated",
    "count_cant_initiate",
    "count_kicked",
    "count_chat_not_found",
    "count_bad_request",
    "count_failed",
)


def upgrade() -> None:
    for name in COLUMNS:
        op.add_column("broadcasts", sa.Column(name, sa.BigInteger(), nullable=True))


def downgrade() -> None:
    columns = {column["name"] for column in sa.inspect(op.get_bind()).get_columns("broadcasts")}
    with op.batch_alter_table("broadcasts") as batch:
        for name in COLUMNS:
            if name in columns:  # MariaDB: dropped by a downgrade that failed further on
                batch.drop_column(name)
