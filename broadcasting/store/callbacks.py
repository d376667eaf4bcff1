"""Statements on the completion webhook columns ``broadcasts.callback_url/callback_state``.

``callback_state`` is ``NULL`` for a broadcast without a webhook, and otherwise one of:

* ``pending`` — not delivered yet (set at creation; the broadcast may still be running);
* ``lease:<unix seconds>`` — a server claimed the delivery and holds it until that time
  (it renews the lease before every attempt). A lease that ran out belongs to nobody: the
  server that held it stopped, and any server claims it again — at least once, across
  restarts and crashes;
* ``delivered`` — the receiver answered 2xx. Final;
* ``failed`` — every attempt failed, or the receiver refused it. Final.

Every change is a conditional update on the state read before it, so when several servers
race for one delivery exactly one of them holds it at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from broadcasting.model import BroadcastStatus

from .tables import broadcasts

PENDING: Final = "pending"
DELIVERED: Final = "delivered"
FAILED: Final = "failed"
LEASE_PREFIX: Final = "lease:"

_FINAL_STATUSES: Final = tuple(status.value for status in BroadcastStatus if status.is_final)
_CANDIDATES: Final = 32
"""Rows read per claim: enough to step over leases other servers hold."""

Settled = Literal["delivered", "failed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CallbackClaim:
    """A webhook delivery this server holds until the time written in ``lease``."""

    broadcast_id: int
    url: str
    lease: str
    """The ``callback_state`` value that proves the claim is still ours."""


def lease_value(until: datetime) -> str:
    """The state of a delivery held until ``until`` (whole seconds, rounded up)."""
    return f"{LEASE_PREFIX}{math.ceil(until.timestamp()):010d}"


def _claimable(state: str, now: datetime) -> bool:
    if state == PENDING:
        return True
    if not state.startswith(LEASE_PREFIX):
        return False
    try:
        until = int(state[len(LEASE_PREFIX) :])
    except ValueError:
        return True  # not written by us: take it over rather than lose the webhook
    return until <= now.timestamp()


async def claim(
    connection: AsyncConnection, *, now: datetime, until: datetime
) -> CallbackClaim | None:
    """Claim the oldest final broadcast whose webhook is due (pending, or a lapsed lease)."""
    statement = (
        select(broadcasts.c.id, broadcasts.c.callback_url, broadcasts.c.callback_state)
        .where(
            # Ranges of ix_broadcasts_callback_state: delivered and failed ones are never read.
            or_(
                broadcasts.c.callback_state == PENDING,
                broadcasts.c.callback_state.startswith(LEASE_PREFIX, autoescape=True),
            ),
            broadcasts.c.status.in_(_FINAL_STATUSES),
        )
        .order_by(broadcasts.c.id)
        .limit(_CANDIDATES)
    )
    lease = lease_value(until)
    for row in (await connection.execute(statement)).all():
        if not row.callback_url or not _claimable(row.callback_state, now):
            continue
        if await _move(connection, row.id, row.callback_state, lease):
            return CallbackClaim(broadcast_id=row.id, url=row.callback_url, lease=lease)
    return None


async def renew(
    connection: AsyncConnection, held: CallbackClaim, *, until: datetime
) -> CallbackClaim | None:
    """Extend the lease; ``None`` if the claim was lost (it lapsed and another server took
    the delivery)."""
    lease = lease_value(until)
    if lease == held.lease or await _move(connection, held.broadcast_id, held.lease, lease):
        return CallbackClaim(broadcast_id=held.broadcast_id, url=held.url, lease=lease)
    return None


async def settle(connection: AsyncConnection, held: CallbackClaim, state: Settled) -> bool:
    """Record the final state of a held delivery; whether the claim was still ours."""
    return await _move(connection, held.broadcast_id, held.lease, state)


async def release(connection: AsyncConnection, held: CallbackClaim) -> bool:
    """Give a held delivery back (``pending``) so any server delivers it at once."""
    return await _move(connection, held.broadcast_id, held.lease, PENDING)


async def state(connection: AsyncConnection, broadcast_id: int) -> str | None:
    statement = select(broadcasts.c.callback_state).where(broadcasts.c.id == broadcast_id)
    value: str | None = (await connection.execute(statement)).scalar_one_or_none()
    return value


async def _move(connection: AsyncConnection, broadcast_id: int, old: str, new: str) -> bool:
    moved = await connection.execute(
        update(broadcasts)
        .where(broadcasts.c.id == broadcast_id, broadcasts.c.callback_state == old)
        .values(callback_state=new)
    )
    return bool(moved.rowcount == 1)
