"""Statements on ``users`` and ``user_tags``: upserts, recipients recorded as users,
deactivation, paging, reading and deleting one user.

Users are a bot's: every statement here takes the ``bot`` and touches only its rows, keyed
by ``(bot, id)``; the same Telegram id under two bots is two users, each with its own
profile, tags and ``active`` state.

A user row is created the first time an id is seen by a bot (as a profile or as a recipient
of one of its broadcasts) and is deleted only by DeleteUser (with its tags; its deliveries
stay); ``active`` decides whether the bot's ``all_users`` and filter broadcasts reach it. A
user's tags are rows of ``user_tags``: an upsert that gives tags deletes the user's rows and
inserts the given ones, in the same transaction, after the ``users`` rows (locks: ``users``
by ``(bot, id)``, then ``user_tags``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    Row,
    String,
    bindparam,
    case,
    delete,
    func,
    null,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import Insert

from tgbroadcast.core.domain.access import DEFAULT_BOT
from tgbroadcast.core.domain.errors import NotFound
from tgbroadcast.core.domain.model import User, UserFilter, UserPage, UserProfile
from tgbroadcast.core.store import audiences, dialects
from tgbroadcast.core.store.limits import IDS_PER_IN_LIST, ROWS_PER_STATEMENT, among, chunks
from tgbroadcast.core.store.tables import (
    BOT_NAME_LENGTH,
    UtcDateTime,
    deliveries,
    user_tags,
    users,
)

PROFILE_FIELDS = ("username", "first_name", "last_name", "language_code")


def check_bot(bot: str) -> None:
    """``ValueError`` for a bot name no ``bot`` column can hold (the API validates names)."""
    if not 0 < len(bot) <= BOT_NAME_LENGTH:
        raise ValueError(f"a bot name has 1 to {BOT_NAME_LENGTH} characters, not {len(bot)}")


def merge_profiles(profiles: Iterable[UserProfile]) -> list[UserProfile]:
    """One profile per id, ascending; for a repeated id a later non-``None`` field wins."""
    merged: dict[int, UserProfile] = {}
    for profile in profiles:
        earlier = merged.get(profile.id)
        merged[profile.id] = profile if earlier is None else _merge(earlier, profile)
    return [merged[user_id] for user_id in sorted(merged)]


async def upsert(
    connection: AsyncConnection, profiles: Sequence[UserProfile], *, bot: str, now: datetime
) -> None:
    """Insert or refresh the bot's users ``profiles`` (distinct ids, ascending: the lock
    order), making them active; then replace the tags of those that give tags."""
    statement = dialects.insert(connection.dialect.name, users)
    # A given field replaces the stored one; a missing (NULL) one keeps it.
    upsert_statement: dialects.UpsertInsert
    if isinstance(statement, mysql.Insert):
        given = statement.inserted
        upsert_statement = statement.on_duplicate_key_update(
            {
                **{name: func.coalesce(given[name], users.c[name]) for name in PROFILE_FIELDS},
                "active": true(),
                "blocked_reason": null(),
                "blocked_at": null(),
                "updated_at": given.updated_at,
            }
        )
    else:
        excluded = statement.excluded
        upsert_statement = statement.on_conflict_do_update(
            index_elements=[users.c.bot, users.c.id],
            set_={
                **{name: func.coalesce(excluded[name], users.c[name]) for name in PROFILE_FIELDS},
                "active": true(),
                "blocked_reason": null(),
                "blocked_at": null(),
                "updated_at": excluded.updated_at,
            },
        )
    rows = [
        {
            "bot": bot,
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
    tagged = [profile for profile in profiles if profile.tags is not None]
    await _replace_tags(connection, tagged, bot=bot)


async def _replace_tags(
    connection: AsyncConnection, profiles: Sequence[UserProfile], *, bot: str
) -> None:
    """The tags of the bot's users ``profiles`` (ascending ids, tags given) become exactly
    the given ones."""
    ids = [profile.id for profile in profiles]
    for id_chunk in chunks(ids, IDS_PER_IN_LIST):
        # Bounded by the chunk's range (:func:`.limits.among`): without it a table whose
        # statistics lagged an import was read whole for every chunk — 2.8 s of a re-import
        # of 10,000 users.
        await connection.execute(
            delete(user_tags).where(user_tags.c.bot == bot, among(user_tags.c.user_id, id_chunk))
        )
    rows = [
        {"bot": bot, "user_id": profile.id, "tag": tag}
        for profile in profiles
        for tag in dict.fromkeys(profile.tags or ())
    ]
    for chunk in chunks(rows, ROWS_PER_STATEMENT):
        await connection.execute(user_tags.insert(), chunk)


HASHED_FROM: Final = 10_000
"""The recipients from which PostgreSQL may be told to hash the bot's users rather than probe
them one by one (below, probing is the quicker either way)."""

HASHED_USERS_PER_RECIPIENT: Final = 4
"""Hashing every user row (all bots') costs about a quarter of probing the primary key per
recipient (``EXPLAIN ANALYZE``: a million known recipients 1.23 s probed, 0.51 s hashed): it
is chosen while ``users`` holds at most this many rows per recipient."""


async def add_recipients(
    connection: AsyncConnection,
    broadcast_id: int,
    *,
    bot: str,
    now: datetime,
    recipients: int = 0,
) -> None:
    """Give every recipient of the broadcast without a user row of ``bot`` (the broadcast's)
    one (active, no profile).

    One ``INSERT .. SELECT`` over the broadcast's deliveries, in user id order; a user that
    a concurrent transaction inserts first is left as that transaction wrote it.

    On PostgreSQL the INSERT first runs without ``ON CONFLICT`` (its speculative insertion
    makes a million new users take 1.7 times as long) in a savepoint: the ``NOT EXISTS``
    leaves out every user committed before the statement, so only a user that a concurrent
    transaction inserted meanwhile conflicts, and then the savepoint is rolled back and the
    statement runs again ignoring conflicts. On SQLite the transaction holds the database's
    write lock: the statement ignores conflicts and has no ``NOT EXISTS`` (a probe per
    recipient that made a million new users take 1.4 times as long). MariaDB keeps it: without
    it, a million known users each went through ``ON DUPLICATE KEY UPDATE`` (2.2 times as long).

    ``recipients`` is how many the broadcast has. PostgreSQL plans the statement knowing
    nothing of them (the broadcast's rows are in no statistics yet: one row, it estimates) and
    probes the users' primary key once per recipient; for many recipients among few enough
    users it is told to hash the users instead (``enable_nestloop`` off for the statement).
    """
    params = {"bot": bot, "now": now, "broadcast_id": broadcast_id}
    hashed = (
        connection.dialect.name == "postgresql"
        and recipients >= HASHED_FROM
        and await _few_users(connection, recipients)
    )
    if hashed:
        await connection.exec_driver_sql("SET LOCAL enable_nestloop = off")
    await _insert_missing(connection, params, together=False)
    if hashed:  # the rest of the transaction planned as usual (after an error: rolled back)
        await connection.exec_driver_sql("SET LOCAL enable_nestloop TO DEFAULT")


async def add_recipients_together(
    connection: AsyncConnection, broadcast_ids: Sequence[int], *, bot: str, now: datetime
) -> None:
    """:func:`add_recipients` for several small new broadcasts of ``bot`` at once: one
    ``INSERT .. SELECT`` over all their deliveries (each recipient once, in user id order),
    with the same handling of users inserted concurrently on each backend."""
    params = {"bot": bot, "now": now, "broadcast_ids": list(broadcast_ids)}
    await _insert_missing(connection, params, together=True)


async def _insert_missing(
    connection: AsyncConnection, params: dict[str, Any], *, together: bool
) -> None:
    """The recipients' missing users inserted as :func:`add_recipients` says per backend:
    ignoring conflicts, or on PostgreSQL first plainly in a savepoint."""
    plain, ignoring = _recipient_inserts(connection.dialect.name, together=together)
    if connection.dialect.name != "postgresql":
        await connection.execute(ignoring, params)
        return
    try:
        async with connection.begin_nested():
            await connection.execute(plain, params)
    except IntegrityError:
        await connection.execute(ignoring, params)


async def _few_users(connection: AsyncConnection, recipients: int) -> bool:
    """Whether PostgreSQL's statistics count at most :data:`HASHED_USERS_PER_RECIPIENT` user
    rows per recipient (never analyzed: unknown, not few)."""
    estimate = await connection.scalar(
        text("SELECT reltuples FROM pg_class WHERE oid = 'users'::regclass")
    )
    return estimate is not None and 0 <= float(estimate) <= recipients * HASHED_USERS_PER_RECIPIENT


@functools.cache
def _recipient_inserts(dialect: str, *, together: bool = False) -> tuple[Insert, Insert]:
    """:func:`add_recipients`' statements, built once per dialect (SQLAlchemy then compiles
    them from its cache): the plain ``INSERT .. SELECT`` and the one ignoring conflicts.
    ``together``: over the deliveries of the broadcasts ``broadcast_ids`` (each user once:
    :func:`add_recipients_together`), not of ``broadcast_id``."""
    known = select(users.c.id).where(
        users.c.bot == bindparam("bot"), users.c.id == deliveries.c.user_id
    )
    recipients = select(
        bindparam("bot", type_=String()),
        deliveries.c.user_id,
        true(),
        bindparam("now", type_=UtcDateTime()),
        bindparam("now", type_=UtcDateTime()),
    )
    if together:
        recipients = recipients.where(
            deliveries.c.broadcast_id.in_(bindparam("broadcast_ids", expanding=True))
        ).distinct()
    else:
        recipients = recipients.where(deliveries.c.broadcast_id == bindparam("broadcast_id"))
    recipients = recipients.order_by(deliveries.c.user_id)
    if dialect != "sqlite":
        recipients = recipients.where(~known.exists())
    columns = ["bot", "id", "active", "created_at", "updated_at"]
    statement = dialects.insert(dialect, users)
    ignoring: dialects.UpsertInsert
    if isinstance(statement, mysql.Insert):
        ignoring = statement.on_duplicate_key_update({"id": users.c.id})
    else:
        ignoring = statement.on_conflict_do_nothing(index_elements=[users.c.bot, users.c.id])
    return users.insert().from_select(columns, recipients), ignoring.from_select(
        columns, recipients
    )


async def deactivate(
    connection: AsyncConnection, reasons: Mapping[int, str | None], *, bot: str, now: datetime
) -> int:
    """Mark the bot's users (the keys) inactive since ``now`` with their reason
    (``"blocked"``, ``"deactivated"`` or ``None``); returns how many of them were active. A
    user inactive already keeps its reason and time; other bots' users with the same ids are
    left alone. Rows are updated in ascending id order."""
    changed = 0
    # Half the usual IN list: a chunk with mixed reasons binds each id twice.
    for chunk in chunks(sorted(reasons), IDS_PER_IN_LIST // 2):
        statement = (
            update(users)
            .where(users.c.bot == bot, among(users.c.id, chunk), users.c.active == true())
            .values(
                active=False,
                blocked_reason=_reason(chunk, reasons),
                blocked_at=now,
                updated_at=now,
            )
        )
        changed += (await connection.execute(statement)).rowcount
    return changed


def _reason(chunk: Sequence[int], reasons: Mapping[int, str | None]) -> Any:
    """``blocked_reason`` for the chunk's rows: one value, or a CASE on the id."""
    by_reason: dict[str | None, list[int]] = {}
    for user_id in chunk:
        by_reason.setdefault(reasons[user_id], []).append(user_id)
    *others, (last, _) = by_reason.items()
    if not others:
        return last
    whens: list[tuple[ColumnElement[bool], Any]] = [
        (users.c.id.in_(ids), reason if reason is not None else null()) for reason, ids in others
    ]
    return case(*whens, else_=last if last is not None else null())


async def migrate(
    connection: AsyncConnection, old_id: int, new_id: int, *, bot: str, now: datetime
) -> None:
    """The group ``old_id`` became the supergroup ``new_id``: the bot's user row moves to the
    new id with its tags (or, if the new id is a user of the bot already, the old row is made
    inactive, with no ``blocked_reason``). Other bots' rows are not touched."""
    exists = select(users.c.id).where(users.c.bot == bot, users.c.id == new_id)
    if (await connection.execute(exists)).first() is None:
        await connection.execute(
            update(users)
            .where(users.c.bot == bot, users.c.id == old_id)
            .values(id=new_id, updated_at=now)
        )
        await connection.execute(
            update(user_tags)
            .where(user_tags.c.bot == bot, user_tags.c.user_id == old_id)
            .values(user_id=new_id)
        )
    else:
        await deactivate(connection, {old_id: None}, bot=bot, now=now)


async def page(
    connection: AsyncConnection,
    *,
    bot: str,
    after: int | None,
    limit: int,
    user_filter: UserFilter | None = None,
    active_only: bool = False,
) -> UserPage:
    """Up to ``limit`` of the bot's users with ``id > after`` by id, matching the filter, with
    their tags (reads one more user to know if more follow)."""
    statement = (
        select(users)
        .where(*audiences.conditions(user_filter, bot=bot, active_only=active_only))
        .order_by(users.c.id)
        .limit(limit + 1)
    )
    if after is not None:
        statement = statement.where(users.c.id > after)
    rows = (await connection.execute(statement)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    tags = await _tags_of(connection, [row.id for row in rows], bot=bot)
    found = tuple(_user(row, tags.get(row.id, ())) for row in rows)
    return UserPage(users=found, next_after=found[-1].id if more else None)


async def fetch(connection: AsyncConnection, user_id: int, *, bot: str) -> User:
    """The bot's user with its tags; :class:`NotFound` if the bot has none with that id."""
    statement = select(users).where(users.c.bot == bot, users.c.id == user_id)
    row = (await connection.execute(statement)).first()
    if row is None:
        raise not_found(user_id, bot=bot)
    tags = await _tags_of(connection, [user_id], bot=bot)
    return _user(row, tags.get(user_id, ()))


async def remove(connection: AsyncConnection, user_id: int, *, bot: str) -> None:
    """Delete the bot's user, then its tags; :class:`NotFound` (nothing deleted) if the bot
    has none with that id. Other bots' users with that id stay."""
    removed = await connection.execute(
        users.delete().where(users.c.bot == bot, users.c.id == user_id)
    )
    if removed.rowcount != 1:
        raise not_found(user_id, bot=bot)
    await connection.execute(
        user_tags.delete().where(user_tags.c.bot == bot, user_tags.c.user_id == user_id)
    )


def not_found(user_id: int, *, bot: str = DEFAULT_BOT) -> NotFound:
    """``user 5 not found``; naming the bot when it is not ``default``."""
    if bot == DEFAULT_BOT:
        return NotFound(f"user {user_id} not found")
    return NotFound(f"user {user_id} of bot {bot!r} not found")


async def _tags_of(
    connection: AsyncConnection, user_ids: Sequence[int], *, bot: str
) -> dict[int, tuple[str, ...]]:
    """Each of the bot's users' tags, sorted (users without tags are absent)."""
    found: dict[int, list[str]] = {}
    for chunk in chunks(sorted(user_ids), IDS_PER_IN_LIST):
        statement = (
            select(user_tags.c.user_id, user_tags.c.tag)
            .where(user_tags.c.bot == bot, among(user_tags.c.user_id, chunk))
            .order_by(user_tags.c.user_id, user_tags.c.tag)
        )
        for user_id, tag in await connection.execute(statement):
            found.setdefault(user_id, []).append(tag)
    return {user_id: tuple(sorted(tags)) for user_id, tags in found.items()}


def _user(row: Row[Any], tags: tuple[str, ...]) -> User:
    return User(
        id=row.id,
        username=row.username,
        first_name=row.first_name,
        last_name=row.last_name,
        language_code=row.language_code,
        active=bool(row.active),
        created_at=row.created_at,
        updated_at=row.updated_at,
        tags=tags,
        blocked_reason=row.blocked_reason,
        blocked_at=row.blocked_at,
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
        tags=later.tags if later.tags is not None else earlier.tags,
    )
