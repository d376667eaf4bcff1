"""``users``' secondary indexes (migration 0016): no index on ``active``, and on PostgreSQL and
SQLite a language-code index holding only the users that have one — while the queries that
select by language code and by activity still answer the same, and a downgrade restores the
indexes as they were."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command

from tests.fixtures.old_schema import indexes, predicate, run_migration
from tgbroadcast.core.domain.model import (
    Content,
    DeliveryResult,
    DeliveryState,
    NewBroadcast,
    UserFilter,
    UserProfile,
)
from tgbroadcast.core.store import Store

BEFORE = "0015"


async def test_only_users_with_a_language_code_are_indexed(database_url: str) -> None:
    async with Store.open(database_url) as store:
        await store.migrate()
        await store.upsert_users(
            [UserProfile(id=1, language_code="de"), UserProfile(id=2, language_code="en")]
        )
        sent = await store.create_broadcast(
            NewBroadcast(content=Content(message="hi"), user_ids=(3, 4))
        )
        await store.record_results(
            [
                DeliveryResult(
                    broadcast_id=sent.id,
                    user_id=4,
                    state=DeliveryState.BLOCKED,
                    finished_at=datetime.now(UTC),
                    error="Forbidden: bot was blocked by the user",
                )
            ]
        )
        german = await store.create_broadcast(
            NewBroadcast(
                content=Content(message="hallo"), filter=UserFilter(language_codes=("de",))
            )
        )
        everyone = await store.create_broadcast(
            NewBroadcast(content=Content(message="all"), all_users=True)
        )
        assert (german.total, everyone.total) == (1, 3)  # 1, 2, 3: 4 blocked the bot

    found = await indexes(database_url, "users")
    assert "ix_users_active" not in found
    language = found["ix_users_language_code"]
    assert language["column_names"] == ["bot", "language_code"]
    if database_url.startswith(("postgresql", "sqlite")):
        assert (predicate(language) or "").replace("(", "").replace(")", "") == (
            "language_code IS NOT NULL"
        )
    else:
        assert predicate(language) is None


async def test_the_downgrade_restores_both_indexes_whole(database_url: str) -> None:
    async with Store.open(database_url) as store:
        await store.migrate()
    await run_migration(database_url, command.downgrade, BEFORE)
    found = await indexes(database_url, "users")
    assert found["ix_users_active"]["column_names"] == ["bot", "active"]
    assert predicate(found["ix_users_language_code"]) is None
    await run_migration(database_url, command.upgrade, "head")
    assert "ix_users_active" not in await indexes(database_url, "users")
