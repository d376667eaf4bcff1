"""Small new broadcasts that arrive together, written in one transaction (group commit,
:mod:`tgbroadcast.core.store.grouping`), on every backend: each caller gets its own
broadcast, or its own error with nothing of it written, and a group's recipients and new
users are those each send would have written alone; a caller that gives up while its write
waits leaves nothing written; a group runs its works by the order they were given."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncConnection

from tests.fixtures.statements import executed
from tgbroadcast.core.domain.errors import AlreadyExists, NotFound
from tgbroadcast.core.domain.model import Broadcast, Content, NewBroadcast, UserProfile
from tgbroadcast.core.store import Store
from tgbroadcast.core.store.grouping import GroupedWrites, Work

HELLO = Content(message="hello")


@contextmanager
def counting_commits() -> Iterator[list[int]]:
    """The commits of every engine of this process meanwhile, as ``[count]``."""
    commits = [0]

    def committed(_connection: Any) -> None:
        commits[0] += 1

    event.listen(Engine, "commit", committed)
    try:
        yield commits
    finally:
        event.remove(Engine, "commit", committed)


async def recipients_of(store: Store, broadcast: Broadcast) -> set[int]:
    page = await store.delivery_report(broadcast.id, after_user_id=None, limit=100)
    return {delivery.user_id for delivery in page}


async def test_sends_arriving_together_get_each_its_own_broadcast(store: Store) -> None:
    with counting_commits() as commits:
        created = await asyncio.gather(
            *(store.create_broadcast(NewBroadcast(content=HELLO, user_ids=(n,))) for n in range(20))
        )
    assert len({broadcast.id for broadcast in created}) == 20
    for n, broadcast in enumerate(created):
        assert broadcast.total == 1
        assert await recipients_of(store, broadcast) == {n}
        assert await store.get_broadcast(broadcast.id) == broadcast
    assert commits[0] < 20  # those that waited for the first were written together


async def test_a_taken_idempotency_key_fails_only_its_own_send(store: Store) -> None:
    first = await store.create_broadcast(
        NewBroadcast(content=HELLO, user_ids=(1,), idempotency_key="k")
    )
    sends = [NewBroadcast(content=HELLO, user_ids=(100 + n,)) for n in range(10)]
    taken = NewBroadcast(content=HELLO, user_ids=(2,), idempotency_key="k")
    *created, refused = await asyncio.gather(
        *(store.create_broadcast(new) for new in sends),
        store.create_broadcast(taken),
        return_exceptions=True,
    )
    assert isinstance(refused, AlreadyExists)
    for n, broadcast in enumerate(created):
        assert isinstance(broadcast, Broadcast), broadcast
        assert await recipients_of(store, broadcast) == {100 + n}
    found = await store.broadcast_by_idempotency_key("k")
    assert found is not None
    assert found[0].id == first.id
    with pytest.raises(NotFound):  # the refused send wrote nothing: not even its new user
        await store.get_user(2)


async def test_a_group_addresses_its_sends_together_as_each_alone_would(store: Store) -> None:
    await store.upsert_users([UserProfile(id=5, first_name="Known")])
    before = await store.get_user(5)
    sends = [
        NewBroadcast(content=HELLO, user_ids=(1, 2)),
        NewBroadcast(content=HELLO, user_ids=(2, 3)),
        NewBroadcast(content=HELLO, user_ids=(5,)),
        NewBroadcast(content=HELLO, user_ids=(2,), bot="shop"),
        NewBroadcast(content=HELLO, user_ids=(8, 7), bot="shop"),
        NewBroadcast(content=HELLO, user_ids=(-100,)),
    ]
    with executed(lambda sql: sql.lstrip().upper().startswith("INSERT INTO USERS")) as user_inserts:
        created = await asyncio.gather(*(store.create_broadcast(new) for new in sends))
    for new, broadcast in zip(sends, created, strict=True):
        assert broadcast.bot == new.bot
        assert broadcast.total == len(new.user_ids)
        assert await recipients_of(store, broadcast) == set(new.user_ids)
        assert await store.get_broadcast(broadcast.id) == broadcast
    default = await store.list_users(after=None, limit=100)
    shop = await store.list_users(after=None, limit=100, bot="shop")
    assert [user.id for user in default.users] == [-100, 1, 2, 3, 5]
    assert [user.id for user in shop.users] == [2, 7, 8]
    assert all(user.active for user in default.users + shop.users)
    assert await store.get_user(5) == before  # a known recipient is left as it was
    # Those that waited for the first send's transaction added their users with one
    # statement per bot, not one per send.
    assert len(user_inserts) < len(sends)


class HeldWrites:
    """A ``write`` that holds every transaction until released, and the works' runs."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.writing = asyncio.Event()
        self.release = asyncio.Event()

    async def write(self, work: Work[list[str]]) -> list[str]:
        self.writing.set()
        await self.release.wait()
        return await work(cast(AsyncConnection, None))

    def named(self, name: str) -> Work[str]:
        async def work(_connection: AsyncConnection) -> str:
            self.ran.append(name)
            return name

        return work


async def test_a_group_runs_its_writes_by_their_order() -> None:
    held = HeldWrites()
    grouped: GroupedWrites[str] = GroupedWrites(held.write)
    first = asyncio.create_task(grouped.run(held.named("first"), order=50))
    await held.writing.wait()  # the next three wait for it, then run together
    rest = [
        asyncio.create_task(grouped.run(held.named(name), order=order))
        for name, order in (("c", 30), ("a", 10), ("b", 20))
    ]
    await asyncio.sleep(0)
    held.release.set()
    assert await asyncio.gather(first, *rest) == ["first", "c", "a", "b"]
    assert held.ran == ["first", "a", "b", "c"]


async def test_a_write_cancelled_while_it_waits_is_never_run() -> None:
    held = HeldWrites()
    grouped: GroupedWrites[str] = GroupedWrites(held.write)
    first = asyncio.create_task(grouped.run(held.named("first")))
    await held.writing.wait()  # the first is being written; the next two wait for it
    second = asyncio.create_task(grouped.run(held.named("second")))
    third = asyncio.create_task(grouped.run(held.named("third")))
    await asyncio.sleep(0)  # both queued
    third.cancel()
    held.release.set()
    assert await first == "first"
    assert await second == "second"
    with pytest.raises(asyncio.CancelledError):
        await third
    assert held.ran == ["first", "second"]
