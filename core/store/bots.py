"""Statements on ``bots``: the bots created through the API, their tokens sealed.

The store never sees a token in clear: rows hold the sealed token and its SHA-256
(:mod:`tgbroadcast.core.bots.sealing`); the unique ``token_hash`` refuses a second bot with
a token already stored, whatever its name.

A deleted bot leaves a *tombstone*: its row with ``deleted_at`` set and its sealed token and
hash wiped. The users, tags and broadcasts kept under its name stay that Telegram bot's: the
name can be taken again only by a bot with the same ``bot_id`` (a new token of the same bot,
which revives the row), never by another bot.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Row, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tgbroadcast.core.domain.bots import StoredBot
from tgbroadcast.core.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from tgbroadcast.core.domain.model import BroadcastStatus
from tgbroadcast.core.store.tables import bots, broadcasts

UNFINISHED = (
    BroadcastStatus.SCHEDULED,
    BroadcastStatus.QUEUED,
    BroadcastStatus.RUNNING,
    BroadcastStatus.PAUSED,
)
"""Broadcasts that may still send: a bot with one of these cannot be deleted."""
T = TypeVar("T")
_SHOWN_IDS = 20
"""Unfinished broadcasts an error names; more are counted."""


LIVE = bots.c.deleted_at.is_(None)
"""Bots not deleted."""
_WIPED_HASH = "deleted:"
"""A tombstone's ``token_hash``: this and its name, unique as the name is."""


async def insert(connection: AsyncConnection, row: StoredBot) -> None:
    """Add the bot, or revive the tombstone of the same Telegram bot under its name;
    ``AlreadyExists`` when the name is a live bot's or was another Telegram bot's;
    ``IntegrityError`` when the token hash is taken (or the name, by a concurrent insert)."""
    values = {
        "bot_id": row.bot_id,
        "username": row.username,
        "token_sealed": row.token_sealed,
        "token_hash": row.token_hash,
        "rate_limit": row.rate_limit,
        "paid_rate_limit": row.paid_rate_limit,
        "api_url": row.api_url,
        "created_at": row.created_at,
        "created_by": row.created_by,
        "deleted_at": None,
    }
    locked = (
        select(bots.c.bot_id, bots.c.deleted_at).where(bots.c.name == row.name).with_for_update()
    )
    found = (await connection.execute(locked)).first()
    if found is None:
        await connection.execute(bots.insert().values(name=row.name, **values))
        return
    if found.deleted_at is None:
        raise AlreadyExists(f"bot {row.name!r} already exists")
    if found.bot_id != row.bot_id:
        raise AlreadyExists(
            f"bot name {row.name!r} belonged to another Telegram bot (id {found.bot_id}) "
            "whose users and broadcasts keep it: choose another name"
        )
    await connection.execute(bots.update().where(bots.c.name == row.name).values(**values))


async def all_rows(connection: AsyncConnection) -> list[StoredBot]:
    """Every stored bot not deleted, by name."""
    result = await connection.execute(select(bots).where(LIVE).order_by(bots.c.name))
    return [_stored(row) for row in result]


async def deleted_names(connection: AsyncConnection) -> list[str]:
    """The names of the deleted bots (their tombstones), by name."""
    statement = select(bots.c.name).where(bots.c.deleted_at.is_not(None)).order_by(bots.c.name)
    return list((await connection.execute(statement)).scalars())


async def fetch(connection: AsyncConnection, name: str) -> StoredBot:
    """The stored bot called ``name``; :class:`NotFound` if there is none (or it was
    deleted)."""
    row = (await connection.execute(select(bots).where(bots.c.name == name, LIVE))).first()
    if row is None:
        raise not_found(name)
    return _stored(row)


async def hold_live(connection: AsyncConnection, name: str) -> None:
    """Read-lock the stored bot's row for the rest of the transaction (``FOR SHARE``): a
    delete waits for it, and then sees what it wrote. ``InvalidArgument`` on ``bot`` when
    the bot is gone (deleted since the caller looked it up)."""
    locked = select(bots.c.name).where(bots.c.name == name, LIVE).with_for_update(read=True)
    if (await connection.execute(locked)).first() is None:
        raise InvalidArgument.single("bot", f"no bot named {name!r}")


async def name_of_hash(connection: AsyncConnection, token_hash: str) -> str | None:
    """The name of the stored bot whose token has this hash, if any."""
    statement = select(bots.c.name).where(bots.c.token_hash == token_hash)
    return (await connection.execute(statement)).scalar_one_or_none()


async def remove(connection: AsyncConnection, name: str) -> None:
    """Delete the bot unless it has unfinished broadcasts (:class:`FailedPrecondition`
    naming them); :class:`NotFound` if unknown. Its row is locked first, so two deletes
    queue."""
    locked = select(bots.c.name).where(bots.c.name == name, LIVE).with_for_update()
    if (await connection.execute(locked)).first() is None:
        raise not_found(name)
    statement = (
        select(broadcasts.c.id)
        .where(broadcasts.c.bot == name, broadcasts.c.status.in_([s.value for s in UNFINISHED]))
        .order_by(broadcasts.c.id)
        .limit(_SHOWN_IDS + 1)
    )
    ids = list((await connection.execute(statement)).scalars())
    if ids:
        shown = ", ".join(str(i) for i in ids[:_SHOWN_IDS]) + (
            ", ..." if len(ids) > _SHOWN_IDS else ""
        )
        raise FailedPrecondition(
            f"bot {name} has unfinished broadcasts: {shown} (cancel them or let them finish)",
            state="unfinished_broadcasts",
            subject="bot",
        )
    await connection.execute(
        bots.update()
        .where(bots.c.name == name)
        .values(token_sealed="", token_hash=_WIPED_HASH + name, deleted_at=datetime.now(UTC))
    )


async def reseal(
    connection: AsyncConnection,
    *,
    open_token: Callable[[str], str | None],
    seal_token: Callable[[str], str],
) -> tuple[list[str], list[str]]:
    """Every row's token opened and sealed again, under row locks: the names re-sealed, and
    those ``open_token`` could not open (None; left as they were)."""
    rows = await connection.execute(
        select(bots.c.name, bots.c.token_sealed).where(LIVE).order_by(bots.c.name).with_for_update()
    )
    resealed: list[str] = []
    unopened: list[str] = []
    for name, sealed in rows.all():
        token = open_token(sealed)
        if token is None:
            unopened.append(name)
            continue
        await connection.execute(
            bots.update().where(bots.c.name == name).values(token_sealed=seal_token(token))
        )
        resealed.append(name)
    return resealed, unopened


def not_found(name: str) -> NotFound:
    return NotFound(f"bot {name!r} not found")


def _stored(row: Row[Any]) -> StoredBot:
    mapping = row._mapping
    return StoredBot(
        name=mapping["name"],
        bot_id=mapping["bot_id"],
        username=mapping["username"],
        token_sealed=mapping["token_sealed"],
        token_hash=mapping["token_hash"],
        rate_limit=mapping["rate_limit"],
        paid_rate_limit=mapping["paid_rate_limit"],
        api_url=mapping["api_url"],
        created_at=mapping["created_at"],
        created_by=mapping["created_by"],
    )


class BotRows:
    """:class:`~.store.Store`'s methods on ``bots`` (a mixin: the store brings its engine and
    its retried write transactions)."""

    if TYPE_CHECKING:
        _engine: AsyncEngine

        async def _write(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T: ...

    async def create_bot(self, row: StoredBot) -> None:
        """Store a bot created through the API (reviving its own tombstone); ``AlreadyExists``
        (nothing written) when its name, or its token (by ``token_hash``), is another stored
        bot's, or the name was another Telegram bot's."""
        try:
            await self._write(lambda connection: insert(connection, row))
        except IntegrityError:  # a token taken, or the name by a concurrent create
            async with self._engine.connect() as connection:
                if await name_of_hash(connection, row.token_hash) not in (None, row.name):
                    raise AlreadyExists("this token is already the token of another bot") from None
            raise AlreadyExists(f"bot {row.name!r} already exists") from None

    async def list_stored_bots(self) -> list[StoredBot]:
        """Every bot created through the API, by name."""
        async with self._engine.connect() as connection:
            return await all_rows(connection)

    async def deleted_bot_names(self) -> list[str]:
        """The names of the bots deleted through the API, by name."""
        async with self._engine.connect() as connection:
            return await deleted_names(connection)

    async def get_stored_bot(self, name: str) -> StoredBot:
        """The stored bot called ``name``; ``NotFound`` if there is none."""
        async with self._engine.connect() as connection:
            return await fetch(connection, name)

    async def delete_stored_bot(self, name: str) -> None:
        """Delete the bot, leaving its tombstone (its broadcasts and users stay, tied to its
        Telegram bot id); ``NotFound``, or
        ``FailedPrecondition`` naming its broadcasts still scheduled, queued, running or
        paused."""
        await self._write(lambda connection: remove(connection, name))

    async def reseal_bots(
        self, *, open_token: Callable[[str], str | None], seal_token: Callable[[str], str]
    ) -> tuple[list[str], list[str]]:
        """Re-seal every stored token in one transaction (a key rotation): the names
        re-sealed, and those ``open_token`` could not open (None: left as they were)."""
        return await self._write(
            lambda connection: reseal(connection, open_token=open_token, seal_token=seal_token)
        )
