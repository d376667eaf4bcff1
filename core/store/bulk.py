"""A new broadcast's deliveries, written in bulk: a million recipients in seconds.

Deliveries are inserted in ascending user id order, the order of their primary key, so the
indexes they are in grow at their right edge instead of splitting pages all over (on SQLite,
1M ids in request order took 3-5 times as long). The ids reach the database the fastest way
measured on each backend (``python -m bench.accept``):

* PostgreSQL: COPY (binary, asyncpg's ``copy_records_to_table``) of the ids sorted in Python
  straight into ``deliveries`` (a million new recipients 1.6 s, against 2.0 s through a
  temporary table and an ``INSERT .. SELECT .. ORDER BY``, and 5 s unsorted).
* MySQL/MariaDB: multi-row INSERTs of the sorted ids, each statement at most half the
  server's ``max_allowed_packet`` (and :data:`~.limits.MYSQL_STATEMENT_BYTES`). The ids are
  written as integer literals (they are 64-bit integers by then): no escaping, no
  parameters. (JSON_TABLE and MariaDB's binary bulk protocol were measured too: slower, or
  no faster.)
* SQLite: ``json_each`` over one JSON array per :data:`~.limits.SQLITE_IDS_PER_STATEMENT`
  ids, sorted by SQLite, in SQLite's default page cache (2 MiB: the sorted inserts touch the
  right edge of the indexes only; a 64 MiB cache was measured slower by 8-10 % for a million
  new recipients, and 89 MB more at peak).

Then the recipients without a user row of the broadcast's bot get one, in one ``INSERT ..
SELECT`` over the new deliveries (:func:`users.add_recipients`). The small broadcasts a group
commit writes together are addressed together: every delivery of them all in one statement,
each bot's new users in one more (:func:`address_together`).

Everything runs on the caller's connection, inside its transaction: the recipients commit or
roll back with their broadcast. The ids come as an array of 64-bit integers from the API
(other callers' are copied into one); Python holds one statement's worth more at a time (on
PostgreSQL and MySQL/MariaDB, a sorted copy too).
"""

from __future__ import annotations

import json
import operator
from array import array
from collections.abc import Iterable, Sequence
from datetime import datetime
from itertools import repeat
from typing import Final, Protocol, cast

from sqlalchemy import (
    BigInteger,
    String,
    Text,
    bindparam,
    func,
    literal,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import Insert

from tgbroadcast.core.domain.model import DeliveryState, UserFilter
from tgbroadcast.core.domain.recipients import INT64_MAX, INT64_MIN
from tgbroadcast.core.store import audiences, limits, users
from tgbroadcast.core.store.limits import chunks
from tgbroadcast.core.store.tables import deliveries
from tgbroadcast.core.store.tables import users as user_table

_MYSQL_ROW_BYTES: Final = 64
"""Room for one ``(broadcast_id,user_id,'pending'),`` with both ids at 20 characters."""

_PENDING: Final = DeliveryState.PENDING.value
_COLUMNS: Final = ("broadcast_id", "user_id", "state")
_MYSQL_INSERT: Final = "INSERT INTO deliveries (broadcast_id, user_id, state) VALUES "


class _Copier(Protocol):
    """The part of asyncpg's ``Connection`` that COPY needs."""

    def is_in_transaction(self) -> bool: ...

    async def copy_records_to_table(
        self, table_name: str, *, records: Iterable[tuple[int, int, str]], columns: Sequence[str]
    ) -> str: ...


async def address(
    connection: AsyncConnection,
    broadcast_id: int,
    user_ids: Sequence[int],
    *,
    bot: str,
    now: datetime,
) -> None:
    """Insert a ``PENDING`` delivery per id (distinct ids) and a user row of ``bot`` (the
    broadcast's) for each id the bot has none for (active, no profile); existing users are
    left untouched.

    ``OverflowError`` (an id outside signed 64 bits: a BIGINT) or ``TypeError`` (not an
    integer), naming the first such id, before any statement: nothing is written.
    """
    ids = _int64_array(user_ids)
    dialect = connection.dialect.name
    if dialect == "postgresql":
        await _copy(connection, broadcast_id, ids)
    elif dialect == "sqlite":
        await _json_arrays(connection, broadcast_id, ids)
    else:
        await _multi_row(connection, broadcast_id, ids)
    await users.add_recipients(connection, broadcast_id, bot=bot, now=now, recipients=len(ids))


async def address_together(
    connection: AsyncConnection,
    addressed: Sequence[tuple[int, Sequence[int], str]],
    *,
    now: datetime,
) -> None:
    """:func:`address` for several new broadcasts at once, each ``(broadcast_id, user_ids,
    bot)``: every delivery of them all in one statement (as :func:`address` writes one
    broadcast's on each backend, in ascending ``(broadcast_id, user_id)``), then each bot's
    recipients without a user row in one (:func:`users.add_recipients_together`). For the
    small broadcasts a server's group commit writes together (:mod:`.creations`)."""
    pairs = sorted(
        (broadcast_id, user_id)
        for broadcast_id, user_ids, _ in addressed
        for user_id in _int64_array(user_ids)
    )
    dialect = connection.dialect.name
    if dialect == "postgresql":
        await _copy_records(connection, ((b, u, _PENDING) for b, u in pairs))
    elif dialect == "sqlite":
        for chunk in chunks(pairs, limits.SQLITE_IDS_PER_STATEMENT):
            await connection.execute(_JSON_PAIRS_INSERT, {"pairs": json.dumps(chunk)})
    else:
        await _multi_row_pairs(connection, pairs)
    by_bot: dict[str, list[int]] = {}
    for broadcast_id, _, bot in addressed:
        by_bot.setdefault(bot, []).append(broadcast_id)
    for bot in sorted(by_bot):
        await users.add_recipients_together(connection, by_bot[bot], bot=bot, now=now)


def _int64_array(user_ids: Sequence[int]) -> array[int]:
    """The ids as signed 64-bit integers (those from the API already are); a precise error
    for the first one that is not."""
    if isinstance(user_ids, array) and user_ids.typecode == "q":
        return user_ids
    try:
        return array("q", user_ids)
    except (OverflowError, TypeError):
        for user_id in user_ids:
            try:
                value = operator.index(user_id)
            except TypeError:
                raise TypeError(f"user id {user_id!r} is not an integer") from None
            if not INT64_MIN <= value <= INT64_MAX:
                raise OverflowError(
                    f"user id {value} is outside signed 64 bits ({INT64_MIN}..{INT64_MAX})"
                ) from None
        raise


async def address_active_users(
    connection: AsyncConnection,
    broadcast_id: int,
    user_filter: UserFilter | None = None,
    *,
    bot: str,
) -> int:
    """Insert a ``PENDING`` delivery per active user of ``bot`` (matching ``user_filter`` when
    given, see :mod:`.audiences`); returns how many. One ``INSERT .. SELECT``: no user
    reaches Python."""
    audience = (
        select(literal(broadcast_id, BigInteger), user_table.c.id, literal(_PENDING, String))
        .where(*audiences.conditions(user_filter, bot=bot, active_only=True))
        .order_by(user_table.c.id)
    )
    inserted = await connection.execute(deliveries.insert().from_select(_COLUMNS, audience))
    return int(inserted.rowcount)


async def _copy(connection: AsyncConnection, broadcast_id: int, user_ids: array[int]) -> None:
    # zip makes the rows' tuples in C (a generator expression took twice as long)
    records = zip(repeat(broadcast_id), sorted(user_ids), repeat(_PENDING), strict=False)
    await _copy_records(connection, records)


async def _copy_records(
    connection: AsyncConnection, records: Iterable[tuple[int, int, str]]
) -> None:
    raw = await connection.get_raw_connection()
    copier = cast(_Copier, raw.driver_connection)
    # The broadcast's INSERT began the transaction; COPY must be part of it, not autocommitted.
    if not copier.is_in_transaction():
        raise RuntimeError("COPY of recipients outside the broadcast's transaction")
    await copier.copy_records_to_table(deliveries.name, records=records, columns=list(_COLUMNS))


def _json_insert() -> Insert:
    ids = func.json_each(bindparam("ids", type_=Text)).table_valued("value")
    ordered = select(
        bindparam("broadcast_id", type_=BigInteger), ids.c.value, literal(_PENDING, String)
    ).order_by(ids.c.value)
    return deliveries.insert().from_select(_COLUMNS, ordered)


_JSON_INSERT = _json_insert()
"""SQLite's insert of one JSON array of ids (built once: compiled from SQLAlchemy's cache)."""


def _json_pairs_insert() -> Insert:
    pairs = func.json_each(bindparam("pairs", type_=Text)).table_valued("value")
    rows = select(
        func.json_extract(pairs.c.value, "$[0]"),
        func.json_extract(pairs.c.value, "$[1]"),
        literal(_PENDING, String),
    )
    return deliveries.insert().from_select(_COLUMNS, rows)


_JSON_PAIRS_INSERT = _json_pairs_insert()
"""SQLite's insert of one JSON array of ``[broadcast_id, user_id]`` pairs, in their order."""


async def _json_arrays(
    connection: AsyncConnection, broadcast_id: int, user_ids: array[int]
) -> None:
    for chunk in chunks(user_ids, limits.SQLITE_IDS_PER_STATEMENT):
        params = {"broadcast_id": broadcast_id, "ids": json.dumps(list(chunk))}
        await connection.execute(_JSON_INSERT, params)


async def _rows_per_statement(connection: AsyncConnection) -> int:
    """How many rows one multi-row INSERT carries: half the server's ``max_allowed_packet``,
    at most :data:`~.limits.MYSQL_STATEMENT_BYTES`."""
    packet = int(await connection.scalar(text("SELECT @@max_allowed_packet")) or 0)
    budget = min(packet // 2, limits.MYSQL_STATEMENT_BYTES)
    return max(1, budget // _MYSQL_ROW_BYTES)


async def _multi_row(connection: AsyncConnection, broadcast_id: int, user_ids: array[int]) -> None:
    per_statement = await _rows_per_statement(connection)
    ordered = sorted(user_ids)  # 64-bit integers: only digits and minus signs reach the SQL
    row_start = f"({int(broadcast_id)},"
    row_end = f",'{_PENDING}')"
    for chunk in chunks(ordered, per_statement):
        rows = row_start + f"{row_end},{row_start}".join(map(str, chunk)) + row_end
        await connection.exec_driver_sql(_MYSQL_INSERT + rows)


async def _multi_row_pairs(connection: AsyncConnection, pairs: Sequence[tuple[int, int]]) -> None:
    per_statement = await _rows_per_statement(connection)
    row_end = f",'{_PENDING}')"
    for chunk in chunks(pairs, per_statement):
        # 64-bit integers: only digits and minus signs reach the SQL
        rows = ",".join(f"({int(b)},{int(u)}{row_end}" for b, u in chunk)
        await connection.exec_driver_sql(_MYSQL_INSERT + rows)
