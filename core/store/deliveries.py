"""Statements on ``deliveries``: reading pending recipients and results, claiming them for a
job, recording results.

:func:`record` is where "counted exactly once" is made true, :func:`claim` where "sent by one
job at a time"; see their docstrings.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Row,
    Select,
    String,
    bindparam,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from tgbroadcast.core.domain.model import (
    Broadcast,
    Delivery,
    DeliveryResult,
    DeliveryState,
    EditOutcome,
    RecallOutcome,
)
from tgbroadcast.core.store import broadcasts as broadcast_statements
from tgbroadcast.core.store import counters, finals, users, variant_counts
from tgbroadcast.core.store.limits import IDS_PER_IN_LIST, chunks
from tgbroadcast.core.store.tables import CLAIM_TOKEN_LENGTH, SETTLED, UtcDateTime, deliveries

_PENDING: Final = DeliveryState.PENDING.value


@dataclass(frozen=True, slots=True, kw_only=True)
class Recorded:
    """What one :meth:`Store.record_results` call changed."""

    recorded: tuple[DeliveryResult, ...]
    """The results this call made final, ordered by ``(broadcast_id, user_id)``."""

    finished: tuple[Broadcast, ...]
    """The broadcasts this call made ``COMPLETED`` (each is reported by exactly one call)."""

    ordinals: tuple[int, ...] = ()
    """Each of :attr:`recorded`'s place among its broadcast's settled recipients (1: the first
    recorded), in the same order: a broadcast's ``sent + failed`` when it was counted."""


def recipients_page(broadcast_id: int, *, after: int | None, limit: int) -> Select[int, str]:
    """The next ``limit`` recipients (any state) after ``after``, ascending, with states."""
    statement = (
        select(deliveries.c.user_id, deliveries.c.state)
        .where(deliveries.c.broadcast_id == broadcast_id)
        .order_by(deliveries.c.user_id)
        .limit(limit)
    )
    return statement if after is None else statement.where(deliveries.c.user_id > after)


async def pending_among(
    connection: AsyncConnection, broadcast_id: int, user_ids: Sequence[int]
) -> frozenset[int]:
    pending: set[int] = set()
    for chunk in chunks(sorted(set(user_ids)), IDS_PER_IN_LIST):
        statement = select(deliveries.c.user_id).where(
            deliveries.c.broadcast_id == broadcast_id,
            deliveries.c.state == _PENDING,
            deliveries.c.user_id.in_(chunk),
        )
        pending.update((await connection.scalars(statement)).all())
    return frozenset(pending)


@dataclass(frozen=True, slots=True, kw_only=True)
class Claimed:
    """What one :func:`claim` found among the recipients it was given."""

    held: frozenset[int]
    """Pending recipients the caller's token holds now: only these may be sent to by it."""

    busy: frozenset[int]
    """Pending recipients another token holds (its claim has not lapsed)."""

    busy_until: datetime | None
    """When the last of the ``busy`` claims lapses unless renewed (``None``: no ``busy``)."""


async def claim(
    connection: AsyncConnection,
    broadcast_id: int,
    user_ids: Sequence[int],
    *,
    token: str,
    now: datetime,
    until: datetime,
) -> Claimed:
    """Claim for ``token``, until ``until``, those of ``user_ids`` that are ``PENDING`` and
    not held by another token (never claimed, released, or its claim lapsed before ``now``);
    claims ``token`` holds already are extended. Per 500 ids the conditional ``UPDATE``, then
    a ``SELECT`` of who holds the pending ones; where the ``UPDATE`` returns the ids it
    claimed (SQLite, PostgreSQL) and they are all the chunk's, that ``SELECT`` is left out
    (MySQL/MariaDB have no ``UPDATE ... RETURNING``).

    Exclusive: the ``UPDATE`` re-checks its condition on each row it locks (PostgreSQL
    re-evaluates it on the newest version; InnoDB reads the current version; SQLite
    serializes writers), so of tokens racing for one recipient exactly one holds it, and the
    ``SELECT`` in the same transaction sees the rows just written. A final recipient is
    never claimed.
    """
    if not 0 < len(token) <= CLAIM_TOKEN_LENGTH:
        raise ValueError(f"a claim token has 1 to {CLAIM_TOKEN_LENGTH} characters")
    held: set[int] = set()
    busy: set[int] = set()
    busy_until: datetime | None = None
    for chunk in chunks(sorted(set(user_ids)), IDS_PER_IN_LIST):
        ids = {"of_broadcast": broadcast_id, "of_users": list(chunk)}
        claiming = {**ids, "token": token, "now": now, "until": until}
        if connection.dialect.update_returning:
            claimed = (await connection.scalars(_CLAIM_RETURNING, claiming)).all()
            held.update(claimed)
            if len(claimed) == len(chunk):  # every one pending, and now this token's
                continue
        else:
            await connection.execute(_CLAIM, claiming)
        for user_id, claimed_by, claimed_until in await connection.execute(_HOLDERS, ids):
            if claimed_by == token:
                held.add(user_id)
                continue
            busy.add(user_id)
            if claimed_until is not None and (busy_until is None or claimed_until > busy_until):
                busy_until = claimed_until
    return Claimed(held=frozenset(held), busy=frozenset(busy), busy_until=busy_until)


_OF_CHUNK = (
    deliveries.c.broadcast_id == bindparam("of_broadcast", type_=BigInteger),
    deliveries.c.user_id.in_(bindparam("of_users", expanding=True)),
)
"""A chunk of one broadcast's recipients (``IDS_PER_IN_LIST`` at most; not named as the
columns are: an ``UPDATE`` keeps those names for its ``SET``)."""

_CLAIM = (
    update(deliveries)
    .where(
        *_OF_CHUNK,
        deliveries.c.state == _PENDING,
        or_(
            deliveries.c.claimed_until.is_(None),
            deliveries.c.claimed_until < bindparam("now", type_=UtcDateTime()),
            deliveries.c.claimed_by == bindparam("token", type_=String),
        ),
    )
    .values(claimed_by=bindparam("token"), claimed_until=bindparam("until", type_=UtcDateTime()))
)
"""Claims the chunk's pending recipients no other token holds (built once, as the
statements of :func:`record` are)."""

_CLAIM_RETURNING = _CLAIM.returning(deliveries.c.user_id)
""":data:`_CLAIM`, returning the ids it claimed (SQLite, PostgreSQL)."""

_HOLDERS = select(deliveries.c.user_id, deliveries.c.claimed_by, deliveries.c.claimed_until).where(
    *_OF_CHUNK, deliveries.c.state == _PENDING
)
"""Who holds each of the chunk's pending recipients."""

_RELEASE = (
    update(deliveries)
    .where(*_OF_CHUNK, deliveries.c.claimed_by == bindparam("token", type_=String))
    .values(claimed_by=None, claimed_until=None)
)
"""Drops the token's claims on the chunk."""


async def release(
    connection: AsyncConnection, broadcast_id: int, user_ids: Sequence[int], *, token: str
) -> int:
    """Give up ``token``'s claims on those of ``user_ids`` it still holds; how many."""
    released = 0
    for chunk in chunks(sorted(set(user_ids)), IDS_PER_IN_LIST):
        parameters = {"of_broadcast": broadcast_id, "of_users": list(chunk), "token": token}
        result = await connection.execute(_RELEASE, parameters)
        released += result.rowcount
    return released


async def results_among(
    connection: AsyncConnection, broadcast_id: int, user_ids: Sequence[int]
) -> list[DeliveryResult]:
    results: list[DeliveryResult] = []
    for chunk in chunks(sorted(set(user_ids)), IDS_PER_IN_LIST):
        statement = (
            select(deliveries)
            .where(
                deliveries.c.broadcast_id == broadcast_id,
                SETTLED,
                deliveries.c.user_id.in_(chunk),
            )
            .order_by(deliveries.c.user_id)
        )
        results.extend(_result(row) for row in await connection.execute(statement))
    return results


async def results_page(
    connection: AsyncConnection, broadcast_id: int, *, after: int | None, limit: int
) -> list[DeliveryResult]:
    statement = (
        select(deliveries)
        .where(deliveries.c.broadcast_id == broadcast_id, SETTLED)
        .order_by(deliveries.c.user_id)
        .limit(limit)
    )
    if after is not None:
        statement = statement.where(deliveries.c.user_id > after)
    return [_result(row) for row in await connection.execute(statement)]


async def report_page(
    connection: AsyncConnection,
    broadcast_id: int,
    *,
    states: frozenset[DeliveryState],
    after: int | None,
    limit: int,
) -> list[Delivery]:
    """Up to ``limit`` recipients in any of ``states`` (all when empty) with ``user_id >
    after``, ascending: the primary key serves the unfiltered shape and any that asks for
    pending recipients, ``ix_deliveries_state`` (settled recipients only) the others."""
    statement = (
        select(
            deliveries.c.user_id,
            deliveries.c.state,
            deliveries.c.message_id,
            deliveries.c.message_ids,
            deliveries.c.error,
            deliveries.c.finished_at,
            deliveries.c.recall,
            deliveries.c.recall_error,
            deliveries.c.content_version,
            deliveries.c.edit,
            deliveries.c.edit_error,
            deliveries.c.variant,
        )
        .where(deliveries.c.broadcast_id == broadcast_id)
        .order_by(deliveries.c.user_id)
        .limit(limit)
    )
    if states:
        statement = statement.where(deliveries.c.state.in_(sorted(s.value for s in states)))
        if DeliveryState.PENDING not in states:
            statement = statement.where(SETTLED)
    if after is not None:
        statement = statement.where(deliveries.c.user_id > after)
    return [
        Delivery(
            user_id=row.user_id,
            state=DeliveryState(row.state),
            finished_at=row.finished_at,
            message_id=row.message_id,
            error=row.error,
            message_ids=decode_message_ids(row.message_ids),
            recall=None if row.recall is None else RecallOutcome(row.recall),
            recall_error=row.recall_error,
            content_version=row.content_version or 1,
            edit=None if row.edit is None else EditOutcome(row.edit),
            edit_error=row.edit_error,
            variant=row.variant,
        )
        for row in await connection.execute(statement)
    ]


async def record(
    connection: AsyncConnection, results: Sequence[DeliveryResult], *, now: datetime
) -> Recorded:
    """Make final the pending deliveries among ``results`` and count them, once.

    ``results`` must be sorted by ``(broadcast_id, user_id)``: that is the order rows are
    locked in, so concurrent calls queue instead of deadlocking. For each chunk, only the
    recipients still ``PENDING`` are written (:func:`.finals.finalize`, which locks them or
    holds the database's write lock); a concurrent transaction that made one of them final
    first is waited for, and the row then no longer qualifies. Only the rows written are
    counted, so a recipient is counted by exactly one transaction. The first result for a
    recipient within ``results`` wins.
    """
    chosen: dict[tuple[int, int], DeliveryResult] = {}
    for result in results:
        chosen.setdefault((result.broadcast_id, result.user_id), result)
    recipients: dict[int, list[int]] = {}
    for broadcast_id, user_id in chosen:
        recipients.setdefault(broadcast_id, []).append(user_id)
    recorded: list[DeliveryResult] = []
    counts: dict[int, tuple[int, int]] = {}
    oldest: dict[int, int] = {}
    """Per broadcast: the oldest content version among the sends recorded."""
    stars: dict[int, int] = {}
    """Per broadcast: the estimated cost of its paid sends recorded (thousandths of a Star)."""
    failures: dict[int, Counter[DeliveryState]] = {}
    """Per broadcast: its recipients recorded as not delivered, by outcome."""
    by_variant: dict[int, Counter[tuple[str, DeliveryState]]] = {}
    """Per broadcast with variants: its recipients recorded, by variant and outcome (every
    outcome of such a broadcast names its variant: a worker picks it before sending)."""
    for broadcast_id, user_ids in sorted(recipients.items()):  # as ``counts`` is taken below
        for chunk in chunks(user_ids, IDS_PER_IN_LIST):
            final = await finals.finalize(connection, [chosen[broadcast_id, u] for u in chunk])
            if not final:
                continue
            recorded.extend(final)
            sent = sum(result.state is DeliveryState.SENT for result in final)
            for result in final:
                if result.state is DeliveryState.SENT:
                    version = min(
                        oldest.get(broadcast_id, counters.NO_SEND), result.content_version
                    )
                    oldest[broadcast_id] = version
                    stars[broadcast_id] = stars.get(broadcast_id, 0) + result.stars_milli
            sent_before, failed_before = counts.get(broadcast_id, (0, 0))
            counts[broadcast_id] = (sent_before + sent, failed_before + len(final) - sent)
            failures.setdefault(broadcast_id, Counter()).update(
                result.state for result in final if not result.state.delivered
            )
            by_variant.setdefault(broadcast_id, Counter()).update(
                (result.variant, result.state) for result in final if result.variant is not None
            )
    await _deactivate_leavers(connection, recorded, now=now)
    finished: list[Broadcast] = []
    ordinals: list[int] = []
    for broadcast_id in sorted(counts):  # the order of ``recorded``
        sent, failed = counts[broadcast_id]
        counted = await counters.count(
            connection,
            broadcast_id,
            sent,
            failed,
            oldest.get(broadcast_id, counters.NO_SEND),
            stars.get(broadcast_id, 0),
            now=now,
            failures=failures.get(broadcast_id),
        )
        if not counted.settled:  # no broadcast row counted them (a delivery always has one)
            ordinals.extend([0] * (sent + failed))  # not numbered
            continue
        ordinals.extend(range(counted.settled - sent - failed + 1, counted.settled + 1))
        await variant_counts.add(connection, broadcast_id, by_variant[broadcast_id])
        if counted.completed:
            finished.append(await broadcast_statements.fetch(connection, broadcast_id))
    return Recorded(recorded=tuple(recorded), finished=tuple(finished), ordinals=tuple(ordinals))


async def _deactivate_leavers(
    connection: AsyncConnection, recorded: Sequence[DeliveryResult], *, now: datetime
) -> None:
    """Make inactive the users these results say left (blocked the bot, deleted their
    account): each a user of its broadcast's bot only, bots in name order (the lock order,
    with the ids ascending within each)."""
    leaving = [r for r in recorded if r.state.deactivates_user]
    if not leaving:
        return
    bots = await broadcast_statements.bots_of(connection, [r.broadcast_id for r in leaving])
    by_bot: dict[str, dict[int, str | None]] = {}
    for result in leaving:
        # The outcome is why the user left: "blocked" or "deactivated".
        by_bot.setdefault(bots[result.broadcast_id], {})[result.user_id] = result.state.value
    for bot in sorted(by_bot):
        await users.deactivate(connection, by_bot[bot], bot=bot, now=now)


def _result(row: Row[Any]) -> DeliveryResult:
    finished_at: datetime | None = row.finished_at
    if finished_at is None:  # never written without one; a broken row must not pass silently
        raise RuntimeError(f"delivery {row.broadcast_id}/{row.user_id} is final without a time")
    return DeliveryResult(
        broadcast_id=row.broadcast_id,
        user_id=row.user_id,
        state=DeliveryState(row.state),
        finished_at=finished_at,
        message_id=row.message_id,
        error=row.error,
        message_ids=decode_message_ids(row.message_ids),
        recall=None if row.recall is None else RecallOutcome(row.recall),
        recall_error=row.recall_error,
        content_version=row.content_version or 1,
        edit=None if row.edit is None else EditOutcome(row.edit),
        edit_error=row.edit_error,
        variant=row.variant,
    )


def decode_message_ids(stored: str | None) -> tuple[int, ...]:
    if not stored:
        return ()
    return tuple(int(i) for i in json.loads(stored))
