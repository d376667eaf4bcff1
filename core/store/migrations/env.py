"""Alembic environment: runs migrations on the connection ``Store.migrate()`` hands over.

There is no ``alembic.ini`` and no offline mode: the schema is only ever migrated through
:meth:`tgbroadcast.core.store.Store.migrate`, which puts an open connection, already inside its
transaction, in ``config.attributes["connection"]``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

config = context.config
connection = config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("run migrations with tgbroadcast.core.store.Store.migrate()")

context.configure(
    connection=connection,
    target_metadata=None,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
