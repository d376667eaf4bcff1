"""Bots: users, tags and broadcasts belong to a bot; bots created through the API.

* ``users``, ``user_tags`` and ``broadcasts`` get a ``bot`` column (``'default'`` for every
  existing row, by its server default: nothing is rewritten row by row in Python). The
  primary keys of ``users`` and ``user_tags`` start with it (the same Telegram id under two
  bots is two users), their indexes too; idempotency keys become unique per bot, and
  ``ix_broadcasts_bot`` lists one bot's broadcasts. ``deliveries`` are unchanged: broadcast
  ids are unique across bots.
* ``bots``: the bots created through the API, their tokens sealed (never in clear).

Per backend: PostgreSQL adds the columns without rewriting the tables (a constant default)
and rebuilds the keys and indexes; MySQL/MariaDB change each table in one ``ALTER TABLE``
(one rebuild); SQLite rebuilds the tables (``INSERT .. SELECT``), setting aside the
``broadcast_actions`` rows that dropping the old ``broadcasts`` would delete by its cascade.

An exception to "revisions only add": a previous release's upserts of users fail on this
schema on PostgreSQL and SQLite (their ``ON CONFLICT`` names the old key) until its
processes are replaced. The downgrade refuses (``RuntimeError``) while a bot other than
``default`` has users, tags or broadcasts, or the API created a bot: it would merge those
bots' users into one.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MYSQL: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_unicode_ci",
}
STATE_LENGTH = 16
ACTOR_LENGTH = 64
BOT_NAME_LENGTH = 32
DEFAULT_BOT = "default"
TAG_LENGTH = 64


def UtcDateTime() -> sa.types.TypeEngine[datetime]:  # noqa: N802 - reads like the column type
    return (
        sa.DateTime()
        .with_variant(postgresql.TIMESTAMP(timezone=True), "postgresql")
        .with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    )


def _bot_column() -> sa.Column[str]:
    return sa.Column("bot", sa.String(BOT_NAME_LENGTH), nullable=False, server_default=DEFAULT_BOT)


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect in ("mysql", "mariadb"):
        _mysql_upgrade()
    elif dialect == "sqlite":
        _sqlite_upgrade()
    else:
        _postgresql_upgrade()
    op.create_table(
        "bots",
        sa.Column("name", sa.String(BOT_NAME_LENGTH), nullable=False),
        sa.Column("bot_id", sa.BigInteger(), nullable=False),
        sa.Column("username", sa.Text(), nullable=True),
        sa.Column("token_sealed", sa.Text(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("rate_limit", sa.Double(), nullable=True),
        sa.Column("paid_rate_limit", sa.Double(), nullable=True),
        sa.Column("api_url", sa.Text(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("created_by", sa.String(ACTOR_LENGTH), nullable=False),
        sa.PrimaryKeyConstraint("name"),
        sa.UniqueConstraint("token_hash", name="uq_bots_token_hash"),
        **MYSQL,
    )


def downgrade() -> None:
    _refuse_to_merge_bots()
    op.drop_table("bots")
    dialect = op.get_bind().dialect.name
    if dialect in ("mysql", "mariadb"):
        _mysql_downgrade()
    elif dialect == "sqlite":
        _sqlite_downgrade()
    else:
        _postgresql_downgrade()


# -- PostgreSQL: ADD COLUMN with a constant default rewrites nothing ------------------------


def _postgresql_upgrade() -> None:
    op.add_column("users", _bot_column())
    op.drop_constraint(_primary_key_name("users"), "users", type_="primary")
    op.create_primary_key("users_pkey", "users", ["bot", "id"])
    _replace_user_indexes(["bot"])
    op.add_column("user_tags", _bot_column())
    op.drop_constraint(_primary_key_name("user_tags"), "user_tags", type_="primary")
    op.create_primary_key("user_tags_pkey", "user_tags", ["bot", "user_id", "tag"])
    op.drop_index("ix_user_tags_tag", table_name="user_tags")
    op.create_index("ix_user_tags_tag", "user_tags", ["bot", "tag", "user_id"])
    _upgrade_broadcasts()


def _postgresql_downgrade() -> None:
    _downgrade_broadcasts()
    op.drop_index("ix_user_tags_tag", table_name="user_tags")
    op.create_index("ix_user_tags_tag", "user_tags", ["tag", "user_id"])
    op.drop_constraint(_primary_key_name("user_tags"), "user_tags", type_="primary")
    op.create_primary_key("user_tags_pkey", "user_tags", ["user_id", "tag"])
    op.drop_column("user_tags", "bot")
    _replace_user_indexes([])
    op.drop_constraint(_primary_key_name("users"), "users", type_="primary")
    op.create_primary_key("users_pkey", "users", ["id"])
    op.drop_column("users", "bot")


def _primary_key_name(table: str) -> str:
    name = sa.inspect(op.get_bind()).get_pk_constraint(table).get("name")
    return name or f"{table}_pkey"


def _replace_user_indexes(leading: list[str]) -> None:
    op.drop_index("ix_users_active", table_name="users")
    op.create_index("ix_users_active", "users", [*leading, "active"])
    op.drop_index("ix_users_language_code", table_name="users")
    op.create_index(
        "ix_users_language_code",
        "users",
        [*leading, "language_code"],
        mysql_length={"language_code": 16},
    )


def _upgrade_broadcasts() -> None:
    with op.batch_alter_table("broadcasts") as batch:
        batch.add_column(_bot_column())
        batch.drop_constraint("uq_broadcasts_idempotency_key", type_="unique")
        batch.create_unique_constraint("uq_broadcasts_idempotency_key", ["bot", "idempotency_key"])
        batch.create_index("ix_broadcasts_bot", ["bot", "id"])


def _downgrade_broadcasts() -> None:
    with op.batch_alter_table("broadcasts") as batch:
        batch.drop_index("ix_broadcasts_bot")
        batch.drop_constraint("uq_broadcasts_idempotency_key", type_="unique")
        batch.create_unique_constraint("uq_broadcasts_idempotency_key", ["idempotency_key"])
        batch.drop_column("bot")


# -- MySQL/MariaDB: one ALTER TABLE (one rebuild) per table ---------------------------------


_MYSQL_BOT = f"bot VARCHAR({BOT_NAME_LENGTH}) NOT NULL DEFAULT '{DEFAULT_BOT}'"


def _mysql_upgrade() -> None:
    op.execute(
        f"ALTER TABLE users ADD COLUMN {_MYSQL_BOT}, "
        "DROP PRIMARY KEY, ADD PRIMARY KEY (bot, id), "
        "DROP INDEX ix_users_active, ADD INDEX ix_users_active (bot, active), "
        "DROP INDEX ix_users_language_code, "
        "ADD INDEX ix_users_language_code (bot, language_code(16))"
    )
    op.execute(
        f"ALTER TABLE user_tags ADD COLUMN {_MYSQL_BOT}, "
        "DROP PRIMARY KEY, ADD PRIMARY KEY (bot, user_id, tag), "
        "DROP INDEX ix_user_tags_tag, ADD INDEX ix_user_tags_tag (bot, tag, user_id)"
    )
    op.execute(
        f"ALTER TABLE broadcasts ADD COLUMN {_MYSQL_BOT}, "
        "DROP INDEX uq_broadcasts_idempotency_key, "
        "ADD CONSTRAINT uq_broadcasts_idempotency_key UNIQUE (bot, idempotency_key), "
        "ADD INDEX ix_broadcasts_bot (bot, id)"
    )


def _mysql_downgrade() -> None:
    op.execute(
        "ALTER TABLE broadcasts DROP INDEX ix_broadcasts_bot, "
        "DROP INDEX uq_broadcasts_idempotency_key, "
        "ADD CONSTRAINT uq_broadcasts_idempotency_key UNIQUE (idempotency_key), "
        "DROP COLUMN bot"
    )
    op.execute(
        "ALTER TABLE user_tags DROP PRIMARY KEY, ADD PRIMARY KEY (user_id, tag), "
        "DROP INDEX ix_user_tags_tag, ADD INDEX ix_user_tags_tag (tag, user_id), "
        "DROP COLUMN bot"
    )
    op.execute(
        "ALTER TABLE users DROP PRIMARY KEY, ADD PRIMARY KEY (id), "
        "DROP INDEX ix_users_active, ADD INDEX ix_users_active (active), "
        "DROP INDEX ix_users_language_code, "
        "ADD INDEX ix_users_language_code (language_code(16)), "
        "DROP COLUMN bot"
    )


# -- SQLite: a primary key changes only by rebuilding the table -----------------------------


def _sqlite_upgrade() -> None:
    # The tables as they are, minus their primary keys: the rebuild gives them the new ones
    # (changing a reflected key in place is refused by SQLAlchemy).
    with op.batch_alter_table("users", copy_from=_users(with_bot=False)) as batch:
        batch.add_column(_bot_column())
        batch.create_primary_key("users_pkey", ["bot", "id"])
        batch.drop_index("ix_users_active")
        batch.create_index("ix_users_active", ["bot", "active"])
        batch.drop_index("ix_users_language_code")
        batch.create_index("ix_users_language_code", ["bot", "language_code"])
    with op.batch_alter_table("user_tags", copy_from=_user_tags(with_bot=False)) as batch:
        batch.add_column(_bot_column())
        batch.create_primary_key("user_tags_pkey", ["bot", "user_id", "tag"])
        batch.drop_index("ix_user_tags_tag")
        batch.create_index("ix_user_tags_tag", ["bot", "tag", "user_id"])
    with _broadcast_actions_set_aside():
        _upgrade_broadcasts()


def _sqlite_downgrade() -> None:
    with _broadcast_actions_set_aside():
        _downgrade_broadcasts()
    with op.batch_alter_table("user_tags", copy_from=_user_tags(with_bot=True)) as batch:
        batch.drop_index("ix_user_tags_tag")
        batch.create_index("ix_user_tags_tag", ["tag", "user_id"])
        batch.drop_column("bot")
        batch.create_primary_key("user_tags_pkey", ["user_id", "tag"])
    with op.batch_alter_table("users", copy_from=_users(with_bot=True)) as batch:
        batch.drop_index("ix_users_active")
        batch.create_index("ix_users_active", ["active"])
        batch.drop_index("ix_users_language_code")
        batch.create_index("ix_users_language_code", ["language_code"])
        batch.drop_column("bot")
        batch.create_primary_key("users_pkey", ["id"])


def _users(*, with_bot: bool) -> sa.Table:
    """``users`` without its primary key, as revision 0005 left it (plus ``bot``)."""
    return sa.Table(
        "users",
        sa.MetaData(),
        sa.Column("id", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("username", sa.Text(), nullable=True),
        sa.Column("first_name", sa.Text(), nullable=True),
        sa.Column("last_name", sa.Text(), nullable=True),
        sa.Column("language_code", sa.Text(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("blocked_reason", sa.String(STATE_LENGTH), nullable=True),
        sa.Column("blocked_at", UtcDateTime(), nullable=True),
        *([_bot_column()] if with_bot else []),
        sa.Index("ix_users_active", "active"),
        sa.Index("ix_users_language_code", "language_code"),
    )


def _user_tags(*, with_bot: bool) -> sa.Table:
    """``user_tags`` without its primary key, as revision 0005 left it (plus ``bot``)."""
    return sa.Table(
        "user_tags",
        sa.MetaData(),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("tag", sa.String(TAG_LENGTH), nullable=False),
        *([_bot_column()] if with_bot else []),
        sa.Index("ix_user_tags_tag", "tag", "user_id"),
    )


@contextlib.contextmanager
def _broadcast_actions_set_aside() -> Iterator[None]:
    """Keep ``broadcast_actions`` through a rebuild of ``broadcasts`` on SQLite.

    The rebuild copies ``broadcasts`` and drops the original; with foreign keys on (the
    store's connections turn them on, and the pragma cannot change inside the migration's
    transaction), that drop first deletes every row, and ``ON DELETE CASCADE`` with them
    every action. So the actions wait in a temporary table and come back after.
    """
    op.execute(
        "CREATE TEMPORARY TABLE tgb_kept_actions AS "
        "SELECT id, broadcast_id, action, actor, at FROM broadcast_actions"
    )
    op.execute("DELETE FROM broadcast_actions")
    yield
    op.execute(
        "INSERT INTO broadcast_actions (id, broadcast_id, action, actor, at) "
        "SELECT id, broadcast_id, action, actor, at FROM tgb_kept_actions"
    )
    op.execute("DROP TABLE tgb_kept_actions")


# -- the downgrade's guard ------------------------------------------------------------------


def _refuse_to_merge_bots() -> None:
    bind = op.get_bind()
    others: list[str] = []
    for table in ("users", "user_tags", "broadcasts"):
        found = bind.execute(
            sa.text(f"SELECT COUNT(*) FROM {table} WHERE bot <> :bot"),  # noqa: S608 - constants
            {"bot": DEFAULT_BOT},
        ).scalar_one()
        if found:
            others.append(f"{found} {table} rows")
    stored = bind.execute(sa.text("SELECT COUNT(*) FROM bots")).scalar_one()
    if stored:
        others.append(f"{stored} bots created through the API")
    if others:
        raise RuntimeError(
            "cannot downgrade below revision 0006: bots other than 'default' have data "
            f"({', '.join(others)}); the older schema has one bot. Restore a backup from "
            "before the upgrade instead."
        )
