"""Alembic migrations of the SQL schema, applied by ``tgbroadcast migrate`` and at start-up.

May import: SQLAlchemy and Alembic only (a migration is frozen: never import the live tables).
"""
