"""A chunk of one broadcast's results written to their deliveries, each only while it is
still pending: the write :func:`.deliveries.record` counts.

* SQLite (3.35 or newer): one ``UPDATE .. RETURNING`` of the rows still pending, their values
  read from one JSON parameter (:data:`SQLITE_FINALIZE`); the transaction holds the
  database's write lock, so no row needs locking first.
* PostgreSQL: one ``UPDATE .. FROM unnest(..) .. RETURNING`` (:data:`POSTGRES_FINALIZE`), a
  column of values per array; it locks the rows in ascending ids, and a row a concurrent
  transaction made final first is waited for and then skipped.
* MySQL/MariaDB: the pending rows selected ``FOR UPDATE`` in ascending ids, then updated
  (``executemany``).

Each statement searches the given ids in the primary key's index (tests/
test_store_recording.py checks the plans of the first two).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, Final

from sqlalchemy import BigInteger, Integer, String, Text, bindparam, select, text, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from tgbroadcast.core.domain.model import DeliveryResult, DeliveryState
from tgbroadcast.core.store.tables import UtcDateTime, deliveries

_PENDING: Final = DeliveryState.PENDING.value


_LOCK_PENDING = (
    select(deliveries.c.user_id)
    .where(
        deliveries.c.broadcast_id == bindparam("broadcast_id", type_=BigInteger),
        deliveries.c.user_id.in_(bindparam("user_ids", expanding=True)),
        deliveries.c.state == _PENDING,
    )
    .order_by(deliveries.c.user_id)
    .with_for_update()
)
"""The recipients among ``user_ids`` still pending, locked (built once, like the statements
below: SQLAlchemy then finds them compiled without computing a cache key each time)."""

_FINALIZE = (
    update(deliveries)
    .where(
        deliveries.c.broadcast_id == bindparam("key_broadcast_id", type_=BigInteger),
        deliveries.c.user_id == bindparam("key_user_id", type_=BigInteger),
        deliveries.c.state == _PENDING,
    )
    .values(
        state=bindparam("new_state", type_=String),
        message_id=bindparam("new_message_id", type_=BigInteger),
        message_ids=bindparam("new_message_ids", type_=Text),
        error=bindparam("new_error", type_=Text),
        finished_at=bindparam("new_finished_at", type_=UtcDateTime()),
        content_version=bindparam("new_content_version", type_=Integer),
        variant=bindparam("new_variant", type_=String),
        claimed_by=None,
        claimed_until=None,
    )
)
"""Writes one final result (and drops its claim); executed many times, on rows just locked
as pending."""


async def finalize(
    connection: AsyncConnection, results: Sequence[DeliveryResult]
) -> list[DeliveryResult]:
    """Write those of ``results`` (one broadcast's, ascending user ids) whose delivery is
    pending; those, in the same order. How, per backend: the module's docstring."""
    broadcast_id = results[0].broadcast_id
    dialect = connection.dialect
    if dialect.name == "sqlite" and dialect.update_returning:
        # finished_at as SQLite stores it: the column type's conversion
        time = deliveries.c.finished_at.type.dialect_impl(dialect).bind_processor(dialect)
        rows = json.dumps([_finalize_row(result, time) for result in results])
        statement, parameters = SQLITE_FINALIZE, {"broadcast_id": broadcast_id, "rows": rows}
    elif dialect.name == "postgresql":
        statement = POSTGRES_FINALIZE
        parameters = {"broadcast_id": broadcast_id, **_postgres_columns(results)}
    else:
        parameters = {"broadcast_id": broadcast_id, "user_ids": [r.user_id for r in results]}
        pending = set((await connection.scalars(_LOCK_PENDING, parameters)).all())
        final = [result for result in results if result.user_id in pending]
        if final:
            await connection.execute(_FINALIZE, [_finalize_parameters(r) for r in final])
        return final
    written = set((await connection.scalars(statement, parameters)).all())
    return [result for result in results if result.user_id in written]


SQLITE_FINALIZE = (
    text(
        "UPDATE deliveries SET (state, message_id, message_ids, error, finished_at,"
        " content_version, variant, claimed_by, claimed_until) = ("
        " SELECT json_extract(r.value, '$[1]'), json_extract(r.value, '$[2]'),"
        " json_extract(r.value, '$[3]'), json_extract(r.value, '$[4]'),"
        " json_extract(r.value, '$[5]'), json_extract(r.value, '$[6]'),"
        " json_extract(r.value, '$[7]'), NULL, NULL"
        " FROM json_each(:rows) AS r WHERE json_extract(r.value, '$[0]') = deliveries.user_id)"
        " WHERE deliveries.broadcast_id = :broadcast_id AND deliveries.state = :pending"
        " AND deliveries.user_id IN (SELECT json_extract(value, '$[0]') FROM json_each(:rows))"
        " RETURNING deliveries.user_id"
    )
    .bindparams(
        bindparam("rows", type_=Text),
        bindparam("broadcast_id", type_=BigInteger),
        bindparam("pending", _PENDING, type_=String),
    )
    .columns(user_id=BigInteger)
)
""":data:`_FINALIZE` of many rows at once on SQLite, each row a JSON array (``_finalize_row``),
returning the user ids it wrote. The ids' list drives the search (the index on the primary
key, with or without the planner's statistics: an ``UPDATE .. FROM json_each`` was planned
as a scan of the broadcast's recipients without them); each written row reads its values
from the list."""


POSTGRES_FINALIZE = (
    text(
        "UPDATE deliveries SET state = r.state, message_id = r.message_id,"
        " message_ids = r.message_ids, error = r.error, finished_at = r.finished_at,"
        " content_version = r.content_version, variant = r.variant,"
        " claimed_by = NULL, claimed_until = NULL"
        " FROM unnest(:user_ids, :states, :message_ids, :message_id_lists, :errors,"
        " :finished, :versions, :variants)"
        " AS r (user_id, state, message_id, message_ids, error, finished_at, content_version,"
        " variant)"
        " WHERE deliveries.broadcast_id = :broadcast_id AND deliveries.user_id = r.user_id"
        " AND deliveries.state = :pending AND deliveries.user_id = ANY(:user_ids)"
        " RETURNING deliveries.user_id"
    )
    .bindparams(
        bindparam("user_ids", type_=postgresql.ARRAY(BigInteger)),
        bindparam("states", type_=postgresql.ARRAY(String)),
        bindparam("message_ids", type_=postgresql.ARRAY(BigInteger)),
        bindparam("message_id_lists", type_=postgresql.ARRAY(Text)),
        bindparam("errors", type_=postgresql.ARRAY(Text)),
        bindparam("finished", type_=postgresql.ARRAY(UtcDateTime())),
        bindparam("versions", type_=postgresql.ARRAY(Integer)),
        bindparam("variants", type_=postgresql.ARRAY(String)),
        bindparam("broadcast_id", type_=BigInteger),
        bindparam("pending", _PENDING, type_=String),
    )
    .columns(user_id=BigInteger)
)
""":data:`_FINALIZE` of many rows at once on PostgreSQL, a column of values per array, rows
locked and written in the arrays' order (ascending ids, as :func:`record` requires) and
skipped if no longer pending once a concurrent writer of theirs committed; returns the user
ids it wrote."""


def _postgres_columns(results: Sequence[DeliveryResult]) -> dict[str, list[Any]]:
    return {
        "user_ids": [r.user_id for r in results],
        "states": [r.state.value for r in results],
        "message_ids": [r.message_id for r in results],
        "message_id_lists": [encode_message_ids(r.message_ids) for r in results],
        "errors": [r.error for r in results],
        "finished": [r.finished_at for r in results],
        "versions": [None if r.content_version == 1 else r.content_version for r in results],
        "variants": [r.variant for r in results],
    }


def _finalize_row(result: DeliveryResult, time: Callable[[Any], Any] | None) -> tuple[object, ...]:
    finished_at = result.finished_at if time is None else time(result.finished_at)
    return (
        result.user_id,
        result.state.value,
        result.message_id,
        encode_message_ids(result.message_ids),
        result.error,
        finished_at,
        None if result.content_version == 1 else result.content_version,
        result.variant,
    )


def _finalize_parameters(result: DeliveryResult) -> dict[str, object]:
    return {
        "key_broadcast_id": result.broadcast_id,
        "key_user_id": result.user_id,
        "new_state": result.state.value,
        "new_message_id": result.message_id,
        "new_message_ids": encode_message_ids(result.message_ids),
        "new_error": result.error,
        "new_finished_at": result.finished_at,
        "new_content_version": None if result.content_version == 1 else result.content_version,
        "new_variant": result.variant,
    }


def encode_message_ids(message_ids: Sequence[int]) -> str | None:
    """``deliveries.message_ids``: a JSON array of two or more ids; ``None`` for fewer."""
    return json.dumps([int(i) for i in message_ids]) if len(message_ids) > 1 else None
