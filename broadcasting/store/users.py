"""Statements on ``users``: upserts from bot updates, recipients recorded as users, paging.

A user row is created the first time an id is seen (as a profile or as a recipient) and is
never deleted; ``active`` decides whether ``all_users`` broadcasts reach it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, literal, select, true, update
from sqlalchemy.dialects import mysql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from broadcasting.model import User, UserPage, UserProfile

from . import dialects
from .limits import IDS_PER_IN_LIST, ROWS_PER_STATEMENT, chunks
from .tables import UtcDateTime, deliveries, users

PROFILE_FIELDS = ("username", "first_name", "last_name", "language_code")


def merge_profiles(profiles: Iterable[UserProfile]) -> list[UserProfile]:
    """One profile per id, ascending; for a repeated id a later non-``None`` field wins."""
    merged: dict[int, UserProfile] = {}
    for profile in profiles:
        earlier = merged.get(profile.id)
        merged[profile.id] = profile if earlier is None else _merge(earlier, profile)
    return [merged[user_id] for user_id in sorted(merged)]


async def upsert(
    connection: AsyncConnection, profiles: Sequence[UserProfile], *, now: datetime
) -> None:
    """Insert or refresh ``profiles`` (distinct ids, ascending: the lock order)."""
    statement = dialects.insert(connection.dialect.name, users)
    # A given field replaces the stored one; a missing (NULL) one keeps it.
    upsert_statement: dialects.UpsertInsert
    if isinstance(statement, mysql.Insert):
        given = statement.inserted
        upsert_statement = statement.on_duplicate_key_update(
            {
                **{name: func.coalesce(given[name], users.c[name]) for name in PROFILE_FIELDS},
                "active": true(),
                "updated_at": given.updated_at,
            }
        )
    else:
        excluded = statement.excluded
        upsert_statement = statement.on_conflict_do_update(
            index_elements=[users.c.id],
            set_={
                **{name: func.coalesce(excluded[name], users.c[name]) for name in PROFILE_FIELDS},
                "active": true(),
                "updated_at": excluded.updated_at,
            },
        )
    rows = [
        {
            "id": profile.id,
            "username": profile.username,
            "first_name": profile.first_name,
            "last_name": profile.last_name,
            "language_code": profile.language_code,
            "active": True,
            "created_at": now,
            "updated_at": now,
        }
        for profile in profiles
    ]
    for chunk in chunks(rows, ROWS_PER_STATEMENT):
        await connection.execute(upsert_statement, chunk)


async def add_recipients(connection: AsyncConnection, broadcast_id: int, *, now: datetime) -> None:
    """Give every recipient of the broadcast without a user row one (active, no profile).

    One ``INSERT .. SELECT`` over the broadcast's deliveries, in user id order; a user that
    a concurrent transaction inserts first is left as that transaction wrote it.

    On PostgreSQL the INSERT first runs without ``ON CONFLICT`` (its speculative insertion
    makes a million new users take 1.7 times as long) in a savepoint: the ``NOT EXISTS``
    leaves out every user committed before the statement, so only a user that a concurrent
    transaction inserted meanwhile conflicts, and then the savepoint is rolled back and the
    statement runs again ignoring conflicts.
    """
    recipients = (
        select(
            deliveries.c.user_id,
            true(),
            literal(now, UtcDateTime()),
            literal(now, UtcDateTime()),
        )
        .where(
            deliveries.c.broadcast_id == broadcast_id,
            ~select(users.c.id).where(users.c.id == deliveries.c.user_id).exists(),
        )
        .order_by(deliveries.c.user_id)
    )
    columns = ["id", "active", "created_at", "updated_at"]
    dialect = connection.dialect.name
    if dialect == "postgresql":
        try:
            async with connection.begin_nested():
                await connection.execute(users.insert().from_select(columns, recipients))
        except IntegrityError:
            pass
        else:
            return
    statement = dialects.insert_ignoring_existing(dialect, users, users.c.id)
    await connection.execute(statement.from_select(columns, recipients))


async def deactivate(connection: AsyncConnection, user_ids: Sequence[int], *, now: datetime) -> int:
    """Mark the users inactive; returns how many of them were active."""
    changed = 0
    for chunk in chunks(sorted(set(user_ids)), IDS_PER_IN_LIST):
        statement = (
            update(users)
            .where(users.c.id.in_(chunk), users.c.active == true())
            .values(active=False, updated_at=now)
        )
        changed += (await connection.execute(statement)).rowcount
    return changed


async def migrate(connection: AsyncConnection, old_id: int, new_id: int, *, now: datetime) -> None:
    """The group ``old_id`` became the supergroup ``new_id``: the user row moves to the new id
    (or, if the new id is a user already, the old row is made inactive)."""
    exists = select(users.c.id).where(users.c.id == new_id)
    if (await connection.execute(exists)).first() is None:
        await connection.execute(
            update(users).where(users.c.id == old_id).values(id=new_id, updated_at=now)
        )
    else:
        await deactivate(connection, [old_id], now=now)


async def page(connection: AsyncConnection, *, after: int | None, limit: int) -> UserPage:
    """Up to ``limit`` users with ``id > after`` by id (reads one more to know if more follow)."""
    statement = select(users).order_by(users.c.id).limit(limit + 1)
    if after is not None:
        statement = statement.where(users.c.id > after)
    rows = (await connection.execute(statement)).all()
    found = tuple(_user(row) for row in rows[:limit])
    return UserPage(users=found, next_after=found[-1].id if len(rows) > limit else None)


def _user(row: Row[Any]) -> User:
    return User(
        id=row.id,
        username=row.username,
        first_name=row.first_name,
        last_name=row.last_name,
        language_code=row.language_code,
        active=bool(row.active),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _merge(earlier: UserProfile, later: UserProfile) -> UserProfile:
    return UserProfile(
        id=later.id,
        username=later.username if later.username is not None else earlier.username,
        first_name=later.first_name if later.first_name is not None else earlier.first_name,
        last_name=later.last_name if later.last_name is not None else earlier.last_name,
        language_code=(
            later.language_code if later.language_code is not None else earlier.language_code
        ),
    )
