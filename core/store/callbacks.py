"""Statements on the completion webhook columns of ``broadcasts``: ``callback_url``,
``callback_state``, ``callback_attempts`` and ``callback_next_at``.

``callback_state`` is ``NULL`` for a broadcast without a webhook, and otherwise one of:

* ``pending`` — not delivered yet (set at creation; the broadcast may still be running). Due
  once ``callback_next_at`` has passed (``NULL``: at once) — a failed attempt puts the
  webhook back here with the time of its retry, so no server holds it while it waits;
* ``lease:<unix seconds>`` — a server claimed the delivery for one attempt and holds it
  until that time (also in ``callback_next_at``). A lease that ran out belongs to nobody:
  the server that held it stopped, and any server claims it again — at least once, across
  restarts and crashes;
* ``delivered`` — the receiver answered 2xx. Final;
* ``failed`` — every attempt failed, or the receiver refused it. Final.

``callback_attempts`` counts the attempts claimed so far (a claim is an attempt, so a
receiver that crashes its sender still runs out of attempts). Rows not yet due are filtered
out in SQL, so no number of held or waiting webhooks hides a due one. Every change is a
conditional update on the state read before it, so when several servers race for one
delivery exactly one of them holds it at a time.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final, Literal, TypeVar

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tgbroadcast.core.domain.model import BroadcastStatus
from tgbroadcast.core.store.tables import broadcasts

PENDING: Final = "pending"
DELIVERED: Final = "delivered"
FAILED: Final = "failed"
LEASE_PREFIX: Final = "lease:"

_FINAL_STATUSES: Final = tuple(status.value for status in BroadcastStatus if status.is_final)
_CANDIDATES: Final = 32
"""Due rows read per claim: enough to step over the ones other servers claim meanwhile."""

Settled = Literal["delivered", "failed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CallbackClaim:
    """A webhook delivery this server holds, for one attempt, until the time in ``lease``."""

    broadcast_id: int
    url: str
    lease: str
    """The ``callback_state`` value that proves the claim is still ours."""
    attempt: int
    """The number of the attempt this claim is for (1 for the first)."""


def lease_value(until: datetime) -> str:
    """The state of a delivery held until ``until`` (whole seconds, rounded up)."""
    return f"{LEASE_PREFIX}{math.ceil(until.timestamp()):010d}"


def _due(now: datetime) -> ColumnElement[bool]:
    """Waiting or held webhooks whose time has come: a retry due, or a lease lapsed."""
    return and_(
        # Ranges of ix_broadcasts_callback_state: delivered and failed ones are never read.
        or_(
            broadcasts.c.callback_state == PENDING,
            broadcasts.c.callback_state.startswith(LEASE_PREFIX, autoescape=True),
        ),
        or_(broadcasts.c.callback_next_at.is_(None), broadcasts.c.callback_next_at <= now),
    )


async def claim(
    connection: AsyncConnection, *, now: datetime, until: datetime
) -> CallbackClaim | None:
    """Claim the oldest final broadcast whose webhook is due, for one attempt until
    ``until``."""
    statement = (
        select(
            broadcasts.c.id,
            broadcasts.c.callback_url,
            broadcasts.c.callback_state,
            broadcasts.c.callback_attempts,
        )
        .where(_due(now), broadcasts.c.status.in_(_FINAL_STATUSES))
        .order_by(broadcasts.c.id)
        .limit(_CANDIDATES)
    )
    lease = lease_value(until)
    for row in (await connection.execute(statement)).all():
        if not row.callback_url:
            continue
        made = row.callback_attempts or 0
        claimed = await connection.execute(
            update(broadcasts)
            .where(
                broadcasts.c.id == row.id,
                broadcasts.c.callback_state == row.callback_state,
                func.coalesce(broadcasts.c.callback_attempts, 0) == made,
                _due(now),
            )
            .values(callback_state=lease, callback_attempts=made + 1, callback_next_at=until)
        )
        if claimed.rowcount == 1:
            return CallbackClaim(
                broadcast_id=row.id, url=row.callback_url, lease=lease, attempt=made + 1
            )
    return None


async def defer(connection: AsyncConnection, held: CallbackClaim, *, due: datetime) -> bool:
    """The attempt failed and will be retried: hand the webhook back, due at ``due`` (any
    server may make the retry); whether the claim was still ours."""
    return await _move(connection, held, PENDING, next_at=due)


async def settle(connection: AsyncConnection, held: CallbackClaim, state: Settled) -> bool:
    """Record the final state of a held delivery; whether the claim was still ours."""
    return await _move(connection, held, state, next_at=None)


async def release(connection: AsyncConnection, held: CallbackClaim) -> bool:
    """Give a held delivery back (``pending``, due at once) without counting its attempt:
    this server stops before it could tell how the attempt went."""
    return await _move(connection, held, PENDING, next_at=None, attempts=held.attempt - 1)


async def _move(
    connection: AsyncConnection,
    held: CallbackClaim,
    new: str,
    *,
    next_at: datetime | None,
    attempts: int | None = None,
) -> bool:
    values: dict[str, object] = {"callback_state": new, "callback_next_at": next_at}
    if attempts is not None:
        values["callback_attempts"] = attempts
    moved = await connection.execute(
        update(broadcasts)
        .where(broadcasts.c.id == held.broadcast_id, broadcasts.c.callback_state == held.lease)
        .values(**values)
    )
    return bool(moved.rowcount == 1)


T = TypeVar("T")


class CallbackRows:
    """:class:`~.store.Store`'s methods on completion webhooks (a mixin: the store brings its
    retried write transactions)."""

    if TYPE_CHECKING:

        async def _write(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T: ...

    async def claim_callback(self, *, lease_seconds: float) -> CallbackClaim | None:
        """Claim the oldest due webhook of a final broadcast, for one attempt, for
        ``lease_seconds``."""
        now = datetime.now(UTC)
        until = now + timedelta(seconds=lease_seconds)
        return await self._write(lambda connection: claim(connection, now=now, until=until))

    async def defer_callback(self, claim: CallbackClaim, *, delay_seconds: float) -> bool:
        """Hand a claimed webhook back, due again ``delay_seconds`` from now (its attempt
        failed and will be retried); whether the claim was still held."""
        due = datetime.now(UTC) + timedelta(seconds=delay_seconds)
        return await self._write(lambda connection: defer(connection, claim, due=due))

    async def settle_callback(self, claim: CallbackClaim, state: Settled) -> bool:
        """Record ``delivered`` or ``failed``; whether the claim was still held."""
        return await self._write(lambda connection: settle(connection, claim, state))

    async def release_callback(self, claim: CallbackClaim) -> bool:
        """Make a claimed webhook ``pending`` again (this server stops before delivering)."""
        return await self._write(lambda connection: release(connection, claim))
