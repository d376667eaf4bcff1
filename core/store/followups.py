"""What recall and edit jobs share: holding ``SENT`` recipients for one job at a time, and
cutting the batches they cover.

A follow-up job (a recall's or an edit's) holds the ``SENT`` recipients it works on with the
same claim columns a send job holds ``PENDING`` ones with (a recipient is in one state or the
other, so the two never meet, and a recall and an edit never hold one recipient at once): two
handlings never touch one recipient's messages at once, so its first answer is the one
recorded. A ``PENDING`` recipient with a live claim is a send in flight: it may become
``SENT`` (with what the follow-up has to undo or redo), so a job that covers one looks again
later.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Select,
    Update,
    and_,
    bindparam,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tgbroadcast.core.domain.model import DeliveryState
from tgbroadcast.core.store.deliveries import decode_message_ids
from tgbroadcast.core.store.limits import IDS_PER_IN_LIST, chunks
from tgbroadcast.core.store.tables import CLAIM_TOKEN_LENGTH, broadcasts, deliveries

_SENT: Final = DeliveryState.SENT.value
_PENDING: Final = DeliveryState.PENDING.value


@dataclass(frozen=True, slots=True, kw_only=True)
class SentTarget:
    """A sent recipient a follow-up job holds: its chat, its messages (in order), when they
    were sent and the content version they were last sent or edited to."""

    user_id: int
    message_ids: tuple[int, ...]
    sent_at: datetime
    content_version: int = 1
    variant: str | None = None
    """The variant it was sent (``None``: the broadcast has none)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SentClaim:
    """What one :func:`claim` found among a follow-up job's recipients."""

    held: tuple[SentTarget, ...]
    """Sent recipients still to do that the caller's token holds, by user id."""
    busy: int
    """Recipients someone else holds: a sent one another handling works on, or a pending one
    whose send is still in flight (it may become sent). The job looks again later."""


@dataclass(frozen=True, slots=True)
class Writing:
    """How a kind writes its outcomes (:func:`writing`): ``write``, one sent recipient's
    (``key_broadcast_id``, ``key_user_id`` and the kind's values) while it is still to do,
    dropping its claim; ``writable``, those among ``user_ids`` it would change, locked in
    ascending ids (PostgreSQL, MariaDB; on SQLite the write transaction holds the database)."""

    write: Update
    writable: Select[int]

    async def write_all(
        self,
        connection: AsyncConnection,
        rows: Sequence[Mapping[str, Any]],
        keys: Mapping[str, Any],
    ) -> list[int]:
        """Write ``rows`` (one broadcast's, ascending user ids; ``keys`` the parameters they
        share, for :attr:`writable`) where :attr:`write` would change the row; the user ids
        written, ascending. One row: its ``UPDATE`` alone (its row count says); more: those
        to write read (and locked) first, then written with one ``executemany`` — a statement
        per recipient was a tenth of a recall's worker."""
        if len(rows) == 1:
            done = await connection.execute(self.write, rows[0])
            return [rows[0]["key_user_id"]] if done.rowcount == 1 else []
        found: list[int] = []
        for chunk in chunks([row["key_user_id"] for row in rows], IDS_PER_IN_LIST):
            found += await connection.scalars(self.writable, {**keys, "user_ids": chunk})
        if found:
            to_write = set(found)
            await connection.execute(
                self.write, [row for row in rows if row["key_user_id"] in to_write]
            )
        return found


def writing(*to_do: ColumnElement[bool], values: Mapping[str, Any]) -> Writing:
    """A kind's :class:`Writing`: its outcome's ``values`` written while the recipient is
    ``SENT`` and ``to_do``. Built once by each kind, with bound parameters: built at every
    row, SQLAlchemy's building and cache key were a sixth of a recall's worker."""
    key = deliveries.c.broadcast_id == bindparam("key_broadcast_id", type_=BigInteger)
    write = (
        update(deliveries)
        .where(
            key,
            deliveries.c.user_id == bindparam("key_user_id", type_=BigInteger),
            deliveries.c.state == _SENT,
            *to_do,
        )
        .values(claimed_by=None, claimed_until=None, **values)
    )
    writable = (
        select(deliveries.c.user_id)
        .where(
            key,
            deliveries.c.user_id.in_(bindparam("user_ids", expanding=True)),
            deliveries.c.state == _SENT,
            *to_do,
        )
        .order_by(deliveries.c.user_id)
        .with_for_update()
    )
    return Writing(write, writable)


@dataclass(frozen=True, slots=True)
class Counter:
    """A follow-up's counter on the broadcast's row (``recalled``, ``edited``): adding a
    transaction's outcomes to it and numbering them (:func:`counter`). Transactions adding to
    one broadcast's counter are ordered by its row's lock, so the ``n`` outcomes one adds are
    numbered the last ``n`` up to the counter it leaves (a watch *from now* drops those
    within its opening's counters: :mod:`tgbroadcast.core.service.cursors`)."""

    add: Update
    returning: Update
    read: Select[int]

    async def count(
        self, connection: AsyncConnection, written: Sequence[int], parameters: dict[str, Any]
    ) -> dict[int, int]:
        """Add ``written`` (user ids, in the order written) to the broadcast's counter
        (``key_broadcast_id`` and the kind's own keys in ``parameters``); each one's number,
        all 0 when the ``UPDATE`` met no row (not counted)."""
        parameters = {**parameters, "written": len(written)}
        if connection.dialect.update_returning:  # PostgreSQL, SQLite
            after = (await connection.execute(self.returning, parameters)).scalar()
        elif (await connection.execute(self.add, parameters)).rowcount == 1:  # MariaDB
            # The row is locked by this transaction's UPDATE: read back as it left it.
            after = (await connection.execute(self.read, parameters)).scalar()
        else:
            after = None
        if after is None:
            return dict.fromkeys(written, 0)
        first = int(after) - len(written) + 1
        return {user_id: first + i for i, user_id in enumerate(written)}


def counter(column: Column[int], *where: ColumnElement[bool]) -> Counter:
    """The :class:`Counter` of ``broadcasts.<column>`` on the broadcast's row that also meets
    ``where``; its statements built once, with bound parameters."""
    key = broadcasts.c.id == bindparam("key_broadcast_id", type_=BigInteger)
    add = (
        update(broadcasts)
        .where(key, *where)
        .values({column: column + bindparam("written", type_=BigInteger)})
    )
    return Counter(add, add.returning(column), select(column).where(key))


def in_flight(now: datetime) -> ColumnElement[bool]:
    """Pending recipients a send job holds: their send may be in flight."""
    return and_(deliveries.c.state == _PENDING, deliveries.c.claimed_until >= now)


async def claim(
    connection: AsyncConnection,
    broadcast_id: int,
    user_ids: Sequence[int],
    *,
    to_do: ColumnElement[bool],
    token: str,
    now: datetime,
    until: datetime,
) -> SentClaim:
    """Hold for ``token`` until ``until`` those of ``user_ids`` that are ``SENT`` and ``to_do``
    and not held by another token (its own are extended); and count the others someone
    holds (sent ones ``to_do``, sends in flight). Exclusive as :func:`.deliveries.claim` is."""
    if not 0 < len(token) <= CLAIM_TOKEN_LENGTH:
        raise ValueError(f"a claim token has 1 to {CLAIM_TOKEN_LENGTH} characters")
    held: list[SentTarget] = []
    busy = 0
    sent_to_do = and_(deliveries.c.state == _SENT, to_do)
    for chunk in chunks(sorted(set(user_ids)), IDS_PER_IN_LIST):
        await connection.execute(
            update(deliveries)
            .where(
                deliveries.c.broadcast_id == broadcast_id,
                deliveries.c.user_id.in_(chunk),
                sent_to_do,
                or_(
                    deliveries.c.claimed_until.is_(None),
                    deliveries.c.claimed_until < now,
                    deliveries.c.claimed_by == token,
                ),
            )
            .values(claimed_by=token, claimed_until=until)
        )
        rows = await connection.execute(
            select(
                deliveries.c.user_id,
                deliveries.c.state,
                deliveries.c.message_id,
                deliveries.c.message_ids,
                deliveries.c.finished_at,
                deliveries.c.claimed_by,
                deliveries.c.content_version,
                deliveries.c.variant,
            )
            .where(
                deliveries.c.broadcast_id == broadcast_id,
                deliveries.c.user_id.in_(chunk),
                or_(sent_to_do, in_flight(now)),
            )
            .order_by(deliveries.c.user_id)
        )
        for row in rows:
            if row.state != _SENT or row.claimed_by != token:
                busy += 1
                continue
            message_ids = decode_message_ids(row.message_ids) or (
                () if row.message_id is None else (row.message_id,)
            )
            held.append(
                SentTarget(
                    user_id=row.user_id,
                    message_ids=message_ids,
                    sent_at=row.finished_at,
                    content_version=row.content_version or 1,
                    variant=row.variant,
                )
            )
    return SentClaim(held=tuple(held), busy=busy)


async def flagged_batches(
    engine: AsyncEngine,
    broadcast_id: int,
    wanted: ColumnElement[bool],
    *,
    batch_size: int,
    read_size: int,
) -> AsyncIterator[tuple[int, ...]]:
    """The broadcast's recipients cut into batches exactly as
    :meth:`~.store.Store.job_batches` cuts them (so a re-dispatch publishes the same jobs),
    leaving out batches where no recipient is ``wanted``."""
    if batch_size < 1 or read_size < 1:
        raise ValueError("batch and read sizes must be positive")
    after: int | None = None
    rows: list[tuple[int, bool]] = []
    last_page = False
    while not last_page:
        statement = (
            select(deliveries.c.user_id, wanted)
            .where(deliveries.c.broadcast_id == broadcast_id)
            .order_by(deliveries.c.user_id)
            .limit(read_size)
        )
        if after is not None:
            statement = statement.where(deliveries.c.user_id > after)
        async with engine.connect() as connection:
            page = (await connection.execute(statement)).all()
        last_page = len(page) < read_size
        if page:
            after = page[-1][0]
        rows.extend((user_id, bool(flag)) for user_id, flag in page)
        cut = len(rows) if last_page else len(rows) - len(rows) % batch_size
        for start in range(0, cut, batch_size):
            batch = rows[start : start + batch_size]
            if any(flag for _, flag in batch):
                yield tuple(user_id for user_id, _ in batch)
        del rows[:cut]
