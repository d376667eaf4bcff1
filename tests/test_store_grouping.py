"""Small new broadcasts that arrive together: on SQLite written in one transaction (group
commit, :mod:`tgbroadcast.core.store.grouping`); on every backend each caller gets its own
broadcast, or its own error with nothing of it written; a caller that gives up while its
write waits leaves nothing written."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncConnection

from tgbroadcast.core.domain.errors import AlreadyExists, NotFound
from tgbroadcast.core.domain.model import Broadcast, Content, NewBroadcast
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


async def test_sends_arriving_together_get_each_its_own_broadcast(
    store: Store, database_url: str
) -> None:
    with counting_commits() as commits:
        created = await asyncio.gather(
            *(store.create_broadcast(NewBroadcast(content=HELLO, user_ids=(n,))) for n in range(20))
        )
    assert len({broadcast.id for broadcast in created}) == 20
    for n, broadcast in enumerate(created):
        assert broadcast.total == 1
        assert await recipients_of(store, broadcast) == {n}
        assert await store.get_broadcast(broadcast.id) == broadcast
    if database_url.startswith("sqlite"):
        assert commits[0] < 20  # they waited for one writer, and were written together
    else:
        assert commits[0] == 20  # each in a transaction of its own, at once


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


async def test_a_write_cancelled_while_it_waits_is_never_run() -> None:
    ran: list[str] = []
    writing = asyncio.Event()
    release = asyncio.Event()

    async def write(work: Work[list[str]]) -> list[str]:
        writing.set()
        await release.wait()
        return await work(cast(AsyncConnection, None))

    def named(name: str) -> Work[str]:
        async def work(_connection: AsyncConnection) -> str:
            ran.append(name)
            return name

        return work

    grouped: GroupedWrites[str] = GroupedWrites(write)
    first = asyncio.create_task(grouped.run(named("first")))
    await writing.wait()  # the first is being written; the next two wait for it
    second = asyncio.create_task(grouped.run(named("second")))
    third = asyncio.create_task(grouped.run(named("third")))
    await asyncio.sleep(0)  # both queued
    third.cancel()
    release.set()
    assert await first == "first"
    assert await second == "second"
    with pytest.raises(asyncio.CancelledError):
        await third
    assert ran == ["first", "second"]
