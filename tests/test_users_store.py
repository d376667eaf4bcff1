"""Users in the store, on SQLite, PostgreSQL and MariaDB: tags, filters resolved in SQL,
blocked reasons, deletion, migrated groups and bulk upserts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from tgbroadcast.core.domain.errors import NotFound
from tgbroadcast.core.domain.model import (
    Content,
    DeliveryResult,
    DeliveryState,
    NewBroadcast,
    UserFilter,
    UserProfile,
)
from tgbroadcast.core.store import Store, create_engine
from tgbroadcast.core.store.tables import broadcasts

HELLO = Content(message="hello")
AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def profile(user_id: int, *tags: str, language_code: str | None = None) -> UserProfile:
    return UserProfile(id=user_id, tags=tags, language_code=language_code)


async def recipients(store: Store, broadcast_id: int) -> set[int]:
    """The broadcast's recipients still pending."""
    pending = await store.delivery_report(
        broadcast_id,
        states=frozenset({DeliveryState.PENDING}),
        after_user_id=None,
        limit=10_000,
    )
    return {delivery.user_id for delivery in pending}


def outcome(broadcast_id: int, user_id: int, state: DeliveryState) -> DeliveryResult:
    return DeliveryResult(
        broadcast_id=broadcast_id,
        user_id=user_id,
        state=state,
        finished_at=AT,
        message_id=1 if state is DeliveryState.SENT else None,
        error=None if state is DeliveryState.SENT else "Forbidden",
    )


async def deactivate(store: Store, user_id: int, state: DeliveryState) -> None:
    """Make a known user inactive as a worker does: a broadcast to it ends in ``state``."""
    created = await store.create_broadcast(NewBroadcast(content=HELLO, user_ids=(user_id,)))
    await store.record_results([outcome(created.id, user_id, state)])


async def test_an_upsert_replaces_the_given_users_tags(store: Store) -> None:
    await store.upsert_users([profile(1, "a", "b"), profile(2, "c")])
    assert (await store.get_user(1)).tags == ("a", "b")

    await store.upsert_users([profile(1, "d", "b")])
    assert (await store.get_user(1)).tags == ("b", "d")
    assert (await store.get_user(2)).tags == ("c",)

    # No tags given (None) keeps them; an empty tuple removes them all.
    await store.upsert_users([UserProfile(id=1, first_name="Ann")])
    assert (await store.get_user(1)).tags == ("b", "d")
    await store.upsert_users([profile(1)])
    one = await store.get_user(1)
    assert (one.tags, one.first_name) == ((), "Ann")
    page = await store.list_users(after=None, limit=10)
    assert [(u.id, u.tags) for u in page.users] == [(1, ()), (2, ("c",))]


async def test_a_filter_resolves_to_active_matching_users_in_sql(
    store: Store, database_url: str
) -> None:
    await store.upsert_users(
        [
            profile(1, "vip", "beta", language_code="en"),  # two matching tags: counted once
            profile(2, "vip", language_code="de"),
            profile(3, "beta", language_code="en"),
            profile(4, language_code="en"),
            profile(5, "vip", language_code="en"),  # made inactive below
            profile(6, "other"),
        ]
    )
    await deactivate(store, 5, DeliveryState.BLOCKED)

    async def resolved(user_filter: UserFilter) -> tuple[int, set[int]]:
        created = await store.create_broadcast(NewBroadcast(content=HELLO, filter=user_filter))
        assert created.total == len(await recipients(store, created.id))
        return created.total, await recipients(store, created.id)

    assert await resolved(UserFilter(tags=("vip", "beta"))) == (3, {1, 2, 3})
    assert await resolved(UserFilter(language_codes=("en",))) == (3, {1, 3, 4})
    assert await resolved(UserFilter(tags=("vip",), language_codes=("en", "fr"))) == (1, {1})
    assert await resolved(UserFilter()) == (5, {1, 2, 3, 4, 6})

    nobody = await store.create_broadcast(
        NewBroadcast(content=HELLO, filter=UserFilter(tags=("nobody",)))
    )
    assert (nobody.total, nobody.status.value) == (0, "completed")

    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            stored = await connection.scalar(
                select(broadcasts.c.audience).where(broadcasts.c.id == nobody.id)
            )
    finally:
        await engine.dispose()
    assert stored == '{"tags":["nobody"],"language_codes":[]}'


async def test_list_users_filters_and_pages(store: Store) -> None:
    await store.upsert_users(
        [profile(i, "even" if i % 2 == 0 else "odd", language_code="en") for i in range(1, 11)]
    )
    await deactivate(store, 4, DeliveryState.BLOCKED)
    evens = UserFilter(tags=("even",))
    first = await store.list_users(after=None, limit=3, user_filter=evens)
    assert [u.id for u in first.users] == [2, 4, 6]
    rest = await store.list_users(after=first.next_after, limit=3, user_filter=evens)
    assert ([u.id for u in rest.users], rest.next_after) == ([8, 10], None)
    active = await store.list_users(after=None, limit=10, user_filter=evens, active_only=True)
    assert [u.id for u in active.users] == [2, 6, 8, 10]
    german = await store.list_users(
        after=None, limit=10, user_filter=UserFilter(language_codes=("de",))
    )
    assert german.users == ()


async def test_delete_user_forgets_it_and_its_tags_but_keeps_deliveries(store: Store) -> None:
    await store.upsert_users([profile(1, "vip"), profile(2, "vip")])
    sent_to = await store.create_broadcast(NewBroadcast(content=HELLO, user_ids=(1, 2)))
    await store.delete_user(1)
    with pytest.raises(NotFound, match="user 1 not found"):
        await store.get_user(1)
    with pytest.raises(NotFound):
        await store.delete_user(1)
    assert await recipients(store, sent_to.id) == {1, 2}
    later = await store.create_broadcast(
        NewBroadcast(content=HELLO, filter=UserFilter(tags=("vip",)))
    )
    assert await recipients(store, later.id) == {2}
    # A new user with the id starts without the old tags.
    await store.upsert_users([UserProfile(id=1)])
    assert (await store.get_user(1)).tags == ()


async def test_blocked_reason_is_set_by_the_outcome_and_cleared_by_an_upsert(
    store: Store,
) -> None:
    await store.upsert_users([profile(1, "vip"), profile(2), profile(3)])
    created = await store.create_broadcast(NewBroadcast(content=HELLO, user_ids=(1, 2, 3)))
    await store.record_results(
        [
            outcome(created.id, 1, DeliveryState.BLOCKED),
            outcome(created.id, 2, DeliveryState.DEACTIVATED),
            outcome(created.id, 3, DeliveryState.SENT),
        ]
    )
    one, two, three = (await store.list_users(after=None, limit=10)).users
    assert (one.active, one.blocked_reason) == (False, "blocked")
    assert (two.active, two.blocked_reason) == (False, "deactivated")
    assert (three.active, three.blocked_reason, three.blocked_at) == (True, None, None)
    assert one.blocked_at is not None
    assert one.blocked_at >= created.created_at

    await store.upsert_users([UserProfile(id=1)])
    again = await store.get_user(1)
    assert (again.active, again.blocked_reason, again.blocked_at, again.tags) == (
        True,
        None,
        None,
        ("vip",),
    )


async def test_many_recipients_with_mixed_reasons_keep_each_reason(store: Store) -> None:
    ids = tuple(range(1, 1201))
    created = await store.create_broadcast(NewBroadcast(content=HELLO, user_ids=ids))
    states = {i: DeliveryState.BLOCKED if i % 3 else DeliveryState.DEACTIVATED for i in ids}
    await store.record_results([outcome(created.id, i, states[i]) for i in ids])
    page = await store.list_users(after=None, limit=1000)
    page_two = await store.list_users(after=page.next_after, limit=1000)
    users = page.users + page_two.users
    assert len(users) == len(ids)
    assert {u.id: u.blocked_reason for u in users} == {i: s.value for i, s in states.items()}
    assert not any(u.active for u in users)


async def test_ten_thousand_users_with_tags_in_one_upsert(store: Store) -> None:
    users = [profile(i, f"t{i % 7}", "all", language_code="en") for i in range(1, 10_001)]
    assert await store.upsert_users(users) == 10_000
    created = await store.create_broadcast(
        NewBroadcast(content=HELLO, filter=UserFilter(tags=("t3",)))
    )
    assert created.total == len([i for i in range(1, 10_001) if i % 7 == 3])
    # Again, with other tags: the old ones are gone.
    assert await store.upsert_users([profile(u.id, "x") for u in users]) == 10_000
    assert (await store.get_user(10)).tags == ("x",)
    none_left = await store.create_broadcast(
        NewBroadcast(content=HELLO, filter=UserFilter(tags=("all",)))
    )
    assert none_left.total == 0


async def test_a_migrated_group_keeps_its_tags(store: Store) -> None:
    await store.upsert_users([profile(-5, "group"), profile(-7, "old"), profile(-1007, "new")])
    await store.migrate_chat(-5, -1005)
    assert (await store.get_user(-1005)).tags == ("group",)
    with pytest.raises(NotFound):
        await store.get_user(-5)
    # The new id is known already: the old row becomes inactive, each keeps its own tags.
    await store.migrate_chat(-7, -1007)
    old, new = await store.get_user(-7), await store.get_user(-1007)
    assert (old.active, old.blocked_reason, old.tags) == (False, None, ("old",))
    assert (new.active, new.tags) == (True, ("new",))
