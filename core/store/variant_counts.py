"""A broadcast's settled recipients per variant and outcome (``variant_counts``), kept by the
transaction that records them, so GetBroadcast of a broadcast with variants reads a few rows
instead of grouping its deliveries at every call.

:func:`add` runs inside :func:`.deliveries.record`'s transaction, after the broadcast's counters
(its row locked first, then these rows: the order every recording takes). :func:`read` trusts
the rows while they add up to the broadcast's ``sent + failed``, read in the same statement; a
broadcast from before the table, or with outcomes recorded by a worker of an older release (a
rollout), is counted from its deliveries.
"""

from __future__ import annotations

from collections import Counter
from typing import Final

from sqlalchemy import BigInteger, Executable, bindparam, func, select
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from tgbroadcast.core.domain.model import DeliveryState
from tgbroadcast.core.store.tables import SETTLED, broadcasts, deliveries, variant_counts

_BROADCAST = bindparam("broadcast_id", type_=BigInteger)


async def add(
    connection: AsyncConnection, broadcast_id: int, counts: Counter[tuple[str, DeliveryState]]
) -> None:
    """Add ``counts`` (per variant and outcome) to the broadcast's; nothing for none (a
    broadcast without variants keeps no rows)."""
    rows = [
        {"broadcast_id": broadcast_id, "variant": variant, "state": state.value, "count": n}
        for (variant, state), n in sorted(counts.items())
    ]
    if rows:
        await connection.execute(_UPSERT[connection.dialect.name], rows)


def _upserts() -> dict[str, Executable]:
    """Per dialect, the ``INSERT`` that adds to a row already there."""
    key = [variant_counts.c.broadcast_id, variant_counts.c.variant, variant_counts.c.state]
    on_mysql = mysql.insert(variant_counts)
    on_postgresql = postgresql.insert(variant_counts)
    on_sqlite = sqlite.insert(variant_counts)
    maria = on_mysql.on_duplicate_key_update(count=variant_counts.c.count + on_mysql.inserted.count)
    return {
        "mysql": maria,
        "mariadb": maria,
        "postgresql": on_postgresql.on_conflict_do_update(
            index_elements=key,
            set_={"count": variant_counts.c.count + on_postgresql.excluded.count},
        ),
        "sqlite": on_sqlite.on_conflict_do_update(
            index_elements=key, set_={"count": variant_counts.c.count + on_sqlite.excluded.count}
        ),
    }


_UPSERT: Final = _upserts()


_KEPT = (
    select(
        (broadcasts.c.sent + broadcasts.c.failed).label("settled"),
        variant_counts.c.variant,
        variant_counts.c.state,
        variant_counts.c.count,
    )
    .select_from(
        broadcasts.outerjoin(variant_counts, variant_counts.c.broadcast_id == broadcasts.c.id)
    )
    .where(broadcasts.c.id == _BROADCAST)
)
"""The broadcast's ``sent + failed`` with each of its kept counts (one row without if none),
read together."""


async def read(
    connection: AsyncConnection, broadcast_id: int
) -> dict[str, dict[DeliveryState, int]]:
    """Per variant name: its recipients per final state (a recipient counts under the variant
    it was sent, once final). The kept rows while they add up to every settled recipient of the
    broadcast (each of a broadcast with variants is recorded with its variant), else its
    deliveries grouped."""
    rows = (await connection.execute(_KEPT, {"broadcast_id": broadcast_id})).all()
    counts: dict[str, dict[DeliveryState, int]] = {}
    kept = 0
    for _, variant, state, count in rows:
        if variant is not None:  # the outer join's row when none is kept
            counts.setdefault(variant, {})[DeliveryState(state)] = int(count)
            kept += int(count)
    if rows and kept == rows[0].settled:
        return counts
    counts = {}
    for variant, state, count in await connection.execute(_GROUPED, {"broadcast_id": broadcast_id}):
        counts.setdefault(variant, {})[DeliveryState(state)] = int(count)
    return counts


_GROUPED = (
    select(deliveries.c.variant, deliveries.c.state, func.count())
    .where(deliveries.c.broadcast_id == _BROADCAST, SETTLED, deliveries.c.variant.is_not(None))
    .group_by(deliveries.c.variant, deliveries.c.state)
)
"""Its settled deliveries grouped by variant and state (what the kept counts stand for)."""
