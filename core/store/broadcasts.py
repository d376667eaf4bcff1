"""Statements on ``broadcasts``: creation with its deliveries, reading, dispatch bookkeeping.

A broadcast is created in one transaction with a ``PENDING`` delivery per recipient and its
``total``; the counters then only move in ``deliveries.record``. A broadcast belongs to one
bot (``bot``): its audience is that bot's users; its id is unique across bots.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    Row,
    bindparam,
    false,
    func,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from tgbroadcast.core.domain import states
from tgbroadcast.core.domain.content import ContentOptions
from tgbroadcast.core.domain.errors import NotFound
from tgbroadcast.core.domain.model import (
    Broadcast,
    BroadcastStatus,
    Content,
    DeliveryState,
    MediaType,
    NewBroadcast,
    UserFilter,
)
from tgbroadcast.core.domain.variants import decode_variants, encode_variants
from tgbroadcast.core.store import actions, audiences, bots, bulk
from tgbroadcast.core.store.limits import IDS_PER_IN_LIST, chunks
from tgbroadcast.core.store.tables import (
    COUNTED_OUTCOMES,
    SETTLED,
    broadcasts,
    count_column,
    deliveries,
)

ACTIVE: Final = (
    BroadcastStatus.QUEUED.value,
    BroadcastStatus.RUNNING.value,
    BroadcastStatus.RECALLING.value,
)
"""Statuses of broadcasts that still have work."""

_FAILABLE: Final = sorted(s.value for s in states.sources(BroadcastStatus.FAILED))


# Built once: SQLAlchemy compiles each from its cache by a key it keeps, instead of building
# the statement and its cache key again for every send.
_INSERT = broadcasts.insert()
_INSERT_RETURNING = broadcasts.insert().returning(*broadcasts.c)
_BY_ID = select(broadcasts).where(broadcasts.c.id == bindparam("broadcast_id"))
_NO_OUTCOMES: Final = {count_column(outcome): 0 for outcome in COUNTED_OUTCOMES}
"""A new broadcast's counts per failure outcome: none yet."""
_COUNTS = select(
    broadcasts.c.sent,
    broadcasts.c.failed,
    *(broadcasts.c[count_column(outcome)] for outcome in COUNTED_OUTCOMES),
).where(broadcasts.c.id == bindparam("broadcast_id"))


@dataclass(frozen=True, slots=True, kw_only=True)
class Creation:
    """A new broadcast to write (:func:`create`); called, it is written in the caller's
    transaction. ``user_ids`` are distinct and empty for ``all_users`` and a filter;
    ``created_by`` is the name of the API token that sent it; ``stored_bot``: a bot created
    through the API (its row read-locked meanwhile); ``click_base``: where a broadcast that
    tracks clicks sends them."""

    new: NewBroadcast
    user_ids: Sequence[int]
    now: datetime
    request_hash: str | None = None
    created_by: str = ""
    stored_bot: bool = False
    click_base: str | None = None

    @property
    def listed(self) -> bool:
        """Whether its recipients are the ids it lists (not every user, not a filter)."""
        return bool(self.user_ids) and not self.new.all_users and self.new.filter is None

    async def __call__(self, connection: AsyncConnection) -> Broadcast:
        return await create(connection, self)


async def create(connection: AsyncConnection, creation: Creation) -> Broadcast:
    """Insert the broadcast, its deliveries and any unknown recipient as a user; with
    ``stored_bot``, first read-lock the bot's row (:func:`.bots.hold_live`). A broadcast
    that tracks clicks gets a random key and ``click_base``.

    A filter's or ``all_users``' recipients are the active users of ``new.bot`` (the filter
    is kept in ``audience``); listed recipients unknown to the bot become its users. With no
    recipient at all the broadcast is ``COMPLETED`` (and dispatched) from the start.
    """
    broadcast_id, created = await insert_row(connection, creation)
    new, now = creation.new, creation.now
    if new.all_users or new.filter is not None:
        await _address_active_users(connection, broadcast_id, new.filter, bot=new.bot, now=now)
    elif creation.user_ids:
        await bulk.address(connection, broadcast_id, creation.user_ids, bot=new.bot, now=now)
    # the service logs it, once committed
    return created if created is not None else await fetch(connection, broadcast_id)


async def insert_row(
    connection: AsyncConnection, creation: Creation
) -> tuple[int, Broadcast | None]:
    """:func:`create`'s broadcast row alone (its recipients are the caller's to address):
    its id, and the broadcast as inserted when the database could read it back from the
    ``INSERT`` itself (a listed audience's row is final as inserted; SQLite 3.35+,
    PostgreSQL, MariaDB 10.5+: one statement fewer), else ``None``."""
    actions.check_actor(creation.created_by)
    new, user_ids, now = creation.new, creation.user_ids, creation.now
    if creation.stored_bot:
        await bots.hold_live(connection, new.bot)
    empty = not user_ids and not new.all_users and new.filter is None
    returning = not new.all_users and new.filter is None and connection.dialect.insert_returning
    inserted = await connection.execute(
        _INSERT_RETURNING if returning else _INSERT,
        {
            "status": initial_status(new, empty=empty, now=now).value,
            "message": new.content.message,
            "media_type": new.content.media_type.value,
            "media_url": new.content.media_url,
            "allow_paid_broadcast": new.content.allow_paid_broadcast,
            "max_stars": new.max_stars,
            "media_upload": new.content.media_upload,
            "media_filename": new.content.media_filename,
            "options": new.content.options.to_json(),
            "variants": encode_variants(new.variants),
            "click_key": secrets.token_hex(16) if new.track_clicks else None,
            "click_base": creation.click_base if new.track_clicks else None,
            "all_users": new.all_users,
            "audience": None if new.filter is None else audiences.to_json(new.filter),
            "total": len(user_ids),
            "sent": 0,
            "failed": 0,
            **_NO_OUTCOMES,
            "dispatched": empty,
            "created_at": now,
            "finished_at": now if empty else None,
            "callback_url": new.callback_url,
            "callback_state": "pending" if new.callback_url else None,
            "send_at": new.send_at,
            "idempotency_key": new.idempotency_key,
            "request_hash": creation.request_hash,
            "created_by": creation.created_by,
            "bot": new.bot,
        },
    )
    if returning:
        row = inserted.one()
        return int(row.id), from_row(row)
    key = inserted.inserted_primary_key
    assert key is not None, "an INSERT always has a primary key"
    return int(key[0]), None


async def fetch(connection: AsyncConnection, broadcast_id: int) -> Broadcast:
    """The broadcast; :class:`NotFound` if there is none."""
    row = (await connection.execute(_BY_ID, {"broadcast_id": broadcast_id})).first()
    if row is None:
        raise not_found(broadcast_id)
    return from_row(row)


def from_row(row: Row[Any]) -> Broadcast:
    """The broadcast a ``SELECT`` of the whole ``broadcasts`` row read."""
    return Broadcast(
        id=row.id,
        status=BroadcastStatus(row.status),
        content=Content(
            message=row.message,
            media_type=MediaType(row.media_type),
            media_url=row.media_url,
            media_upload=row.media_upload,
            media_filename=row.media_filename,
            allow_paid_broadcast=row.allow_paid_broadcast,
            options=ContentOptions.from_json(row.options),
        ),
        total=row.total,
        sent=row.sent,
        failed=row.failed,
        created_at=row.created_at,
        finished_at=row.finished_at,
        error=row.error,
        callback_url=row.callback_url,
        send_at=row.send_at,
        started_at=row.started_at,
        idempotency_key=row.idempotency_key,
        resumed_at=row.resumed_at,
        created_by=row.created_by,
        bot=row.bot,
        recall_at=row.recall_at,
        recalled=row.recalled,
        content_version=row.content_version,
        media_version=row.media_version,
        edit_at=row.edit_at,
        editing=row.editing,
        edited=row.edited,
        throttled_until=row.throttled_until,
        max_stars=row.max_stars,
        stars_spent_milli=row.stars_spent_milli,
        paid_stopped_at=row.paid_stopped_at,
        variants=decode_variants(row.variants, allow_paid_broadcast=row.allow_paid_broadcast),
        click_key=row.click_key,
        click_base=row.click_base,
    )


async def fail(
    connection: AsyncConnection, broadcast_id: int, reason: str, *, now: datetime
) -> bool:
    """Stop a broadcast that still has work as FAILED with ``reason``; whether it did."""
    stopped = await connection.execute(
        update(broadcasts)
        .where(broadcasts.c.id == broadcast_id, broadcasts.c.status.in_(_FAILABLE))
        .values(status=BroadcastStatus.FAILED.value, error=reason, finished_at=now)
    )
    return bool(stopped.rowcount == 1)


async def outcome_counts(
    connection: AsyncConnection, broadcast_id: int
) -> dict[DeliveryState, int]:
    """Recipients per final state (states no recipient has are absent): the broadcast's
    counters when they account for every failure, else — a broadcast created before they were
    kept, or with outcomes recorded by a worker of an older release during a rollout, or an
    unknown one — its deliveries grouped by state."""
    row = (await connection.execute(_COUNTS, {"broadcast_id": broadcast_id})).first()
    if row is not None and None not in row:
        sent, failed, *counted = (int(value) for value in row)
        if sum(counted) == failed:
            counts = {DeliveryState.SENT: sent, **dict(zip(COUNTED_OUTCOMES, counted, strict=True))}
            return {state: count for state, count in counts.items() if count}
    statement = (
        select(deliveries.c.state, func.count())
        .where(deliveries.c.broadcast_id == broadcast_id, SETTLED)
        .group_by(deliveries.c.state)
    )
    return {
        DeliveryState(state): int(count) for state, count in await connection.execute(statement)
    }


async def count_errors(
    connection: AsyncConnection, broadcast_id: int, state: DeliveryState, error: str
) -> int:
    statement = select(func.count()).where(
        deliveries.c.broadcast_id == broadcast_id,
        deliveries.c.state == state.value,
        SETTLED,  # (every error is a settled recipient's)
        deliveries.c.error == error,
    )
    return int((await connection.execute(statement)).scalar_one())


async def file_id(
    connection: AsyncConnection, broadcast_id: int, media_version: int = 1
) -> str | None:
    """The stored file_id of the broadcast's media, if it is still the ``media_version``'s
    (an edit that replaced the media clears it)."""
    statement = select(broadcasts.c.file_id).where(
        broadcasts.c.id == broadcast_id, broadcasts.c.media_version == media_version
    )
    value: str | None = (await connection.execute(statement)).scalar_one_or_none()
    return value


async def store_file_id(
    connection: AsyncConnection, broadcast_id: int, file_id: str, media_version: int = 1
) -> None:
    """Store the first file_id of the ``media_version``'s media (not once it was replaced)."""
    await connection.execute(
        update(broadcasts)
        .where(
            broadcasts.c.id == broadcast_id,
            broadcasts.c.file_id.is_(None),
            broadcasts.c.media_version == media_version,
        )
        .values(file_id=file_id)
    )


async def mark_throttled(connection: AsyncConnection, bot: str, until: datetime) -> int:
    """Show the bot's unfinished broadcasts parked until ``until``; how many."""
    marked = await connection.execute(
        update(broadcasts)
        .where(
            broadcasts.c.bot == bot,
            or_(broadcasts.c.status.in_(ACTIVE), broadcasts.c.editing == true()),
            or_(broadcasts.c.throttled_until.is_(None), broadcasts.c.throttled_until < until),
        )
        .values(throttled_until=until)
    )
    return int(marked.rowcount)


async def undispatched(
    connection: AsyncConnection, *, created_before: datetime | None = None
) -> list[int]:
    """Ids of broadcasts with work whose jobs are not all queued, ascending."""
    statement = (
        select(broadcasts.c.id)
        .where(
            broadcasts.c.dispatched == false(),
            or_(broadcasts.c.status.in_(ACTIVE), broadcasts.c.editing == true()),
        )
        .order_by(broadcasts.c.id)
    )
    if created_before is not None:
        statement = statement.where(broadcasts.c.created_at < created_before)
    return list((await connection.scalars(statement)).all())


async def count_active(connection: AsyncConnection, *, bot: str | None = None) -> int:
    """Broadcasts in an :data:`ACTIVE` status (an index range scan of ``ix_broadcasts_status``),
    of every bot, or only of ``bot``."""
    statement = select(func.count()).select_from(broadcasts).where(broadcasts.c.status.in_(ACTIVE))
    if bot is not None:
        statement = statement.where(broadcasts.c.bot == bot)
    return int((await connection.execute(statement)).scalar_one())


async def bots_of(connection: AsyncConnection, broadcast_ids: Sequence[int]) -> dict[int, str]:
    """The bot of each of the broadcasts (unknown ids are absent)."""
    found: dict[int, str] = {}
    for chunk in chunks(sorted(set(broadcast_ids)), IDS_PER_IN_LIST):
        statement = select(broadcasts.c.id, broadcasts.c.bot).where(broadcasts.c.id.in_(chunk))
        found.update({row.id: row.bot for row in await connection.execute(statement)})
    return found


def initial_status(new: NewBroadcast, *, empty: bool, now: datetime) -> BroadcastStatus:
    """``COMPLETED`` with no recipient, ``SCHEDULED`` until a future ``send_at``, else
    ``QUEUED`` (a ``send_at`` in the past means now)."""
    if empty:
        return BroadcastStatus.COMPLETED
    if new.send_at is not None and new.send_at > now:
        return BroadcastStatus.SCHEDULED
    return BroadcastStatus.QUEUED


def not_found(broadcast_id: int) -> NotFound:
    return NotFound(f"broadcast {broadcast_id} not found")


async def _address_active_users(
    connection: AsyncConnection,
    broadcast_id: int,
    user_filter: UserFilter | None,
    *,
    bot: str,
    now: datetime,
) -> None:
    total = await bulk.address_active_users(connection, broadcast_id, user_filter, bot=bot)
    done: dict[str, Any] = {}
    if not total:
        done = {"status": BroadcastStatus.COMPLETED.value, "dispatched": True, "finished_at": now}
    await connection.execute(
        update(broadcasts).where(broadcasts.c.id == broadcast_id).values(total=total, **done)
    )
