"""Bots in the store, on SQLite, PostgreSQL and MariaDB: the same Telegram id under two bots
is two users (profile, tags, blocked state, deletion), audiences are one bot's users,
idempotency keys are per bot, and listing filters by bot."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from tgbroadcast.core.domain.access import DEFAULT_BOT
from tgbroadcast.core.domain.errors import AlreadyExists, NotFound
from tgbroadcast.core.domain.model import (
    Broadcast,
    BroadcastStatus,
    Content,
    DeliveryResult,
    DeliveryState,
    NewBroadcast,
    UserFilter,
    UserProfile,
)
from tgbroadcast.core.store import Store

HELLO = Content(message="hello")
AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
ALPHA = "alpha"
BETA = "beta"


def profile(user_id: int, *tags: str, first_name: str | None = None) -> UserProfile:
    return UserProfile(id=user_id, tags=tags, first_name=first_name, language_code="en")


def outcome(broadcast_id: int, user_id: int, state: DeliveryState) -> DeliveryResult:
    return DeliveryResult(
        broadcast_id=broadcast_id,
        user_id=user_id,
        state=state,
        finished_at=AT,
        message_id=1 if state is DeliveryState.SENT else None,
        error=None if state is DeliveryState.SENT else "Forbidden: bot was blocked by the user",
    )


async def recipients(store: Store, broadcast_id: int) -> set[int]:
    report = await store.delivery_report(broadcast_id, after_user_id=None, limit=10_000)
    return {delivery.user_id for delivery in report}


async def ids(store: Store, bot: str, *, active_only: bool = False) -> list[int]:
    page = await store.list_users(after=None, limit=100, bot=bot, active_only=active_only)
    return [user.id for user in page.users]


async def test_one_telegram_id_under_two_bots_is_two_users(store: Store) -> None:
    await store.upsert_users([profile(1, "vip", first_name="Ann"), profile(2)], bot=ALPHA)
    await store.upsert_users([profile(1, "news", first_name="Anna")], bot=BETA)

    alpha, beta = await store.get_user(1, bot=ALPHA), await store.get_user(1, bot=BETA)
    assert (alpha.first_name, alpha.tags) == ("Ann", ("vip",))
    assert (beta.first_name, beta.tags) == ("Anna", ("news",))
    assert (await ids(store, ALPHA), await ids(store, BETA)) == ([1, 2], [1])
    assert await ids(store, DEFAULT_BOT) == []
    with pytest.raises(NotFound, match="user 1 not found"):
        await store.get_user(1)
    with pytest.raises(NotFound, match="user 2 of bot 'beta' not found"):
        await store.get_user(2, bot=BETA)

    # Replacing one bot's tags leaves the other's.
    await store.upsert_users([profile(1, "gold")], bot=BETA)
    assert (await store.get_user(1, bot=ALPHA)).tags == ("vip",)
    assert (await store.get_user(1, bot=BETA)).tags == ("gold",)

    assert (await store.profiles([1, 2], bot=BETA)).keys() == {1}
    assert (await store.profiles([1, 2], bot=ALPHA))[1].first_name == "Ann"


async def test_deleting_a_user_of_one_bot_keeps_the_other_bots(store: Store) -> None:
    await store.upsert_users([profile(7, "vip")], bot=ALPHA)
    await store.upsert_users([profile(7, "vip")], bot=BETA)
    await store.delete_user(7, bot=ALPHA)
    with pytest.raises(NotFound):
        await store.get_user(7, bot=ALPHA)
    with pytest.raises(NotFound):
        await store.delete_user(7, bot=ALPHA)
    kept = await store.get_user(7, bot=BETA)
    assert (kept.active, kept.tags) == (True, ("vip",))
    # A new user 7 of ALPHA does not inherit the tags BETA's user 7 has.
    await store.upsert_users([UserProfile(id=7)], bot=ALPHA)
    assert (await store.get_user(7, bot=ALPHA)).tags == ()


async def test_a_blocked_result_deactivates_only_the_user_of_the_broadcasts_bot(
    store: Store,
) -> None:
    await store.upsert_users([profile(1), profile(2)], bot=ALPHA)
    await store.upsert_users([profile(1), profile(2)], bot=BETA)
    to_alpha = await store.create_broadcast(NewBroadcast(content=HELLO, user_ids=(1, 2), bot=ALPHA))
    to_beta = await store.create_broadcast(NewBroadcast(content=HELLO, user_ids=(1, 2), bot=BETA))
    assert (to_alpha.bot, to_beta.bot) == (ALPHA, BETA)

    # One call records both bots' results (a worker's batch may mix them).
    await store.record_results(
        [
            outcome(to_alpha.id, 1, DeliveryState.BLOCKED),
            outcome(to_beta.id, 1, DeliveryState.SENT),
            outcome(to_beta.id, 2, DeliveryState.DEACTIVATED),
            outcome(to_alpha.id, 2, DeliveryState.SENT),
        ]
    )
    assert await ids(store, ALPHA, active_only=True) == [2]
    assert await ids(store, BETA, active_only=True) == [1]
    assert (await store.get_user(1, bot=ALPHA)).blocked_reason == "blocked"
    assert (await store.get_user(2, bot=BETA)).blocked_reason == "deactivated"
    assert (await store.get_user(1, bot=BETA)).blocked_reason is None

    # all_users now reaches each bot's own active users only.
    everyone_alpha = await store.create_broadcast(
        NewBroadcast(content=HELLO, all_users=True, bot=ALPHA)
    )
    everyone_beta = await store.create_broadcast(
        NewBroadcast(content=HELLO, all_users=True, bot=BETA)
    )
    assert await recipients(store, everyone_alpha.id) == {2}
    assert await recipients(store, everyone_beta.id) == {1}
    assert await store.audience_size(None, bot=ALPHA) == 1
    assert await store.audience_size(None, bot=DEFAULT_BOT) == 0


async def test_audiences_are_the_bots_own_users(store: Store) -> None:
    await store.upsert_users([profile(1, "vip"), profile(2, "vip"), profile(3)], bot=ALPHA)
    await store.upsert_users([profile(3, "vip"), profile(4, "vip")], bot=BETA)
    await store.upsert_users([profile(5, "vip")])  # the default bot's

    vip = UserFilter(tags=("vip",))
    alpha = await store.create_broadcast(NewBroadcast(content=HELLO, filter=vip, bot=ALPHA))
    beta = await store.create_broadcast(NewBroadcast(content=HELLO, filter=vip, bot=BETA))
    default = await store.create_broadcast(NewBroadcast(content=HELLO, filter=vip))
    assert (alpha.total, beta.total, default.total) == (2, 2, 1)
    assert await recipients(store, alpha.id) == {1, 2}
    assert await recipients(store, beta.id) == {3, 4}
    assert await recipients(store, default.id) == {5}
    assert default.bot == DEFAULT_BOT
    assert await store.audience_size(vip, bot=BETA) == 2
    english = UserFilter(language_codes=("en",))
    assert [
        u.id for u in (await store.list_users(after=None, limit=9, user_filter=english)).users
    ] == [5]

    everyone = await store.create_broadcast(NewBroadcast(content=HELLO, all_users=True, bot=BETA))
    assert await recipients(store, everyone.id) == {3, 4}


async def test_user_ids_recipients_become_users_of_the_broadcasts_bot(store: Store) -> None:
    await store.upsert_users([profile(1, "vip", first_name="Ann")], bot=ALPHA)
    created = await store.create_broadcast(
        NewBroadcast(content=HELLO, user_ids=(1, 2, 3), bot=BETA)
    )
    assert (created.bot, created.total) == (BETA, 3)
    assert await ids(store, BETA) == [1, 2, 3]
    assert await ids(store, ALPHA) == [1]
    assert await ids(store, DEFAULT_BOT) == []
    fresh = await store.get_user(1, bot=BETA)
    assert (fresh.first_name, fresh.tags) == (None, ())
    # ALPHA's user 1 is untouched.
    assert (await store.get_user(1, bot=ALPHA)).first_name == "Ann"

    # The same recipients again under BETA: no new rows, nothing changed.
    again = await store.create_broadcast(NewBroadcast(content=HELLO, user_ids=(3, 4), bot=BETA))
    assert again.total == 2
    assert await ids(store, BETA) == [1, 2, 3, 4]


async def test_idempotency_keys_are_per_bot(store: Store) -> None:
    first = await store.create_broadcast(
        NewBroadcast(content=HELLO, user_ids=(1,), idempotency_key="k", bot=ALPHA),
        request_hash="a" * 64,
    )
    other_bot = await store.create_broadcast(
        NewBroadcast(content=HELLO, user_ids=(1,), idempotency_key="k", bot=BETA),
        request_hash="b" * 64,
    )
    assert first.id != other_bot.id
    with pytest.raises(AlreadyExists, match="idempotency key 'k' is taken"):
        await store.create_broadcast(
            NewBroadcast(content=HELLO, user_ids=(2,), idempotency_key="k", bot=ALPHA)
        )
    found_alpha = await store.broadcast_by_idempotency_key("k", bot=ALPHA)
    found_beta = await store.broadcast_by_idempotency_key("k", bot=BETA)
    assert found_alpha is not None
    assert found_beta is not None
    assert (found_alpha[0].id, found_alpha[1]) == (first.id, "a" * 64)
    assert (found_beta[0].id, found_beta[1]) == (other_bot.id, "b" * 64)
    assert await store.broadcast_by_idempotency_key("k") is None

    # Racing under a third bot: exactly one wins, the others see AlreadyExists.
    results = await asyncio.gather(
        *(
            store.create_broadcast(
                NewBroadcast(content=HELLO, user_ids=(1,), idempotency_key="k", bot="gamma")
            )
            for _ in range(3)
        ),
        return_exceptions=True,
    )
    created = [r for r in results if isinstance(r, Broadcast)]
    assert len(created) == 1, results
    assert all(isinstance(r, AlreadyExists) for r in results if not isinstance(r, Broadcast))


async def test_list_broadcasts_filters_by_bots(store: Store) -> None:
    made = {
        bot: [
            (await store.create_broadcast(NewBroadcast(content=HELLO, user_ids=(1,), bot=bot))).id
            for _ in range(2)
        ]
        for bot in (ALPHA, BETA, DEFAULT_BOT)
    }

    async def listed(bots: list[str] | None, *, limit: int = 10) -> list[int]:
        found = await store.list_broadcasts(statuses=(), before=None, limit=limit, bots=bots)
        return [broadcast.id for broadcast in found]

    assert await listed(None) == sorted(
        (i for made_ids in made.values() for i in made_ids), reverse=True
    )
    assert await listed([ALPHA]) == made[ALPHA][::-1]
    assert await listed([BETA, DEFAULT_BOT]) == sorted(made[BETA] + made[DEFAULT_BOT], reverse=True)
    assert await listed([]) == []
    assert await listed(["nobody"]) == []
    page = await store.list_broadcasts(
        statuses=(BroadcastStatus.QUEUED,), before=made[ALPHA][1], limit=1, bots=[ALPHA]
    )
    assert [(b.id, b.bot) for b in page] == [(made[ALPHA][0], ALPHA)]
    assert (await store.get_broadcast(made[BETA][0])).bot == BETA


async def test_active_broadcasts_counted_per_bot_or_overall(store: Store) -> None:
    await store.create_broadcast(NewBroadcast(content=HELLO, user_ids=(1,), bot=ALPHA))
    await store.create_broadcast(NewBroadcast(content=HELLO, user_ids=(1,), bot=ALPHA))
    await store.create_broadcast(NewBroadcast(content=HELLO, user_ids=(1,), bot=BETA))
    assert await store.count_active_broadcasts() == 3
    assert await store.count_active_broadcasts(bot=ALPHA) == 2
    assert await store.count_active_broadcasts(bot=DEFAULT_BOT) == 0


async def test_a_migrated_group_moves_only_under_its_bot(store: Store) -> None:
    await store.upsert_users([profile(-100, "group")], bot=ALPHA)
    await store.upsert_users([profile(-100, "group")], bot=BETA)
    await store.migrate_chat(-100, -1_000_000_000_100, bot=ALPHA)
    moved = await store.get_user(-1_000_000_000_100, bot=ALPHA)
    assert moved.tags == ("group",)
    with pytest.raises(NotFound):
        await store.get_user(-100, bot=ALPHA)
    assert (await store.get_user(-100, bot=BETA)).tags == ("group",)
    with pytest.raises(NotFound):
        await store.get_user(-1_000_000_000_100, bot=BETA)


async def test_bot_names_no_column_can_hold_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="1 to 32 characters"):
        await store.create_broadcast(NewBroadcast(content=HELLO, user_ids=(1,), bot="x" * 33))
    with pytest.raises(ValueError, match="1 to 32 characters"):
        await store.upsert_users([profile(1)], bot="")
    assert await store.list_broadcasts(statuses=(), before=None, limit=10) == []
