"""Stored bots' rows on SQLite, PostgreSQL and MariaDB: a deleted bot leaves a tombstone that
ties its name (and the users and broadcasts kept under it) to its Telegram bot id, and a send
racing the deletion of its bot never leaves a broadcast of a deleted bot."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from tgbroadcast.core.domain.bots import StoredBot
from tgbroadcast.core.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from tgbroadcast.core.domain.model import Broadcast, Content, NewBroadcast, UserProfile
from tgbroadcast.core.store import Store

AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def row(name: str, bot_id: int, *, token_hash: str | None = None) -> StoredBot:
    return StoredBot(
        name=name,
        bot_id=bot_id,
        username=f"{name}_bot",
        token_sealed=f"sealed-{name}-{bot_id}",
        token_hash=token_hash or f"{bot_id:064x}",
        rate_limit=None,
        paid_rate_limit=None,
        api_url=None,
        created_at=AT,
        created_by="admin",
    )


def to(bot: str, *user_ids: int) -> NewBroadcast:
    return NewBroadcast(content=Content(message="hi"), user_ids=user_ids, bot=bot)


async def test_a_deleted_bot_leaves_a_tombstone_only_its_own_telegram_bot_revives(
    store: Store,
) -> None:
    await store.create_bot(row("shop", 111))
    await store.upsert_users([UserProfile(id=5, tags=("vip",))], bot="shop")
    await store.delete_stored_bot("shop")

    # Gone for every reader; its token and the token's hash wiped from the row.
    assert await store.list_stored_bots() == []
    with pytest.raises(NotFound):
        await store.get_stored_bot("shop")
    with pytest.raises(NotFound):
        await store.delete_stored_bot("shop")
    assert await store.deleted_bot_names() == ["shop"]
    # The token is free again, under another name.
    await store.create_bot(row("kiosk", 111, token_hash=f"{111:064x}"))
    await store.delete_stored_bot("kiosk")

    # Another Telegram bot may not take the name: the users under it are not its users.
    with pytest.raises(AlreadyExists, match="belonged to another Telegram bot"):
        await store.create_bot(row("shop", 222))
    assert await store.list_stored_bots() == []

    # The same Telegram bot (a new token) takes it back, with its users.
    revived = row("shop", 111, token_hash="f" * 64)
    await store.create_bot(revived)
    assert await store.get_stored_bot("shop") == revived
    assert (await store.get_user(5, bot="shop")).tags == ("vip",)
    assert await store.deleted_bot_names() == ["kiosk"]
    with pytest.raises(AlreadyExists, match="'shop' already exists"):
        await store.create_bot(row("shop", 111, token_hash="e" * 64))


async def test_a_send_for_a_deleted_stored_bot_is_refused_on_bot(store: Store) -> None:
    await store.create_bot(row("shop", 111))
    await store.delete_stored_bot("shop")
    with pytest.raises(InvalidArgument) as refused:
        await store.create_broadcast(to("shop", 1), stored_bot=True)
    assert [v.field for v in refused.value.violations] == ["bot"]
    assert await store.list_broadcasts(statuses=(), before=None, limit=10) == []


async def test_a_send_racing_the_deletion_of_its_bot_never_both_succeed(store: Store) -> None:
    """Either the delete waits for the send and is refused (the bot has an unfinished
    broadcast), or the send waits for the delete and is refused (no such bot): never a
    deleted bot with a broadcast still to send."""
    outcomes: set[tuple[bool, bool]] = set()
    for round_ in range(8):
        name = f"race{round_}"
        await store.create_bot(row(name, 1000 + round_))
        deleted, sent = await asyncio.gather(
            store.delete_stored_bot(name),
            store.create_broadcast(to(name, 1, 2), stored_bot=True),
            return_exceptions=True,
        )
        if deleted is None:
            assert isinstance(sent, InvalidArgument), sent
        else:
            assert isinstance(deleted, FailedPrecondition), deleted
            assert isinstance(sent, Broadcast), sent
        outcomes.add((deleted is None, isinstance(sent, Broadcast)))
    assert outcomes <= {(True, False), (False, True)}
