"""The few statements and errors that differ between SQLite, PostgreSQL and MySQL/MariaDB."""

from __future__ import annotations

from typing import Final

from sqlalchemy import Table
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.exc import DBAPIError

_PG_RETRYABLE: Final = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected
_MYSQL_RETRYABLE: Final = frozenset({1205, 1213})  # lock wait timeout, deadlock

UpsertInsert = postgresql.Insert | sqlite.Insert | mysql.Insert
"""An INSERT that can take the dialect's conflict clause."""


def insert(dialect: str, table: Table) -> UpsertInsert:
    """The dialect's own INSERT for ``table`` (with ``ON CONFLICT`` / ``ON DUPLICATE KEY``)."""
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    return mysql.insert(table)


def is_retryable(dialect: str, error: DBAPIError) -> bool:
    """Whether the database aborted the transaction for a deadlock or lock conflict.

    Such a transaction was rolled back entirely and may simply be run again. SQLite never
    reports one: its writers queue on ``busy_timeout`` instead.
    """
    original = error.orig
    if dialect == "postgresql":
        return getattr(original, "sqlstate", None) in _PG_RETRYABLE
    if dialect in ("mysql", "mariadb"):
        code = original.args[0] if original is not None and original.args else None
        return code in _MYSQL_RETRYABLE
    return False
