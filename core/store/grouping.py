"""Group commit: small write transactions that arrive together committed as one.

A one-recipient ``SendMessage`` is a handful of statements, and much of its cost in the server
is the transaction around them: a connection from the pool, ``BEGIN``, the commit and the
pool's reset — on SQLite each a hand-off to the driver's thread, while the sends queue for
the one writer anyway; elsewhere each a round trip. Here the works that arrive while a
transaction of theirs is running wait for it to end, then run inside the next one — one
after another, each the same statements as alone, or through a :data:`Merge` that writes the
same rows with fewer statements (new broadcasts' recipients: :mod:`.creations`) — and all of
them commit together or not at all. Measured with 8 callers of one-recipient sends, the
server's CPU per send fell by a third on SQLite, PostgreSQL and MariaDB alike, and its p50
and p99 with it; the merge took another 15 % off (docs/profiles.md).

If the group's transaction fails (a constraint one of them breaks, a lost connection), it
rolled back whole, and each of its works runs again in a transaction of its own: each
caller gets exactly the result or the error it would have had alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

logger = logging.getLogger(__name__)

T = TypeVar("T")

Work = Callable[[AsyncConnection], Awaitable[T]]
Write = Callable[[Work[list[T]]], Awaitable[list[T]]]
Merge = Callable[[AsyncConnection, list[Work[T]]], Awaitable[list[T]]]
"""Runs a group's works in one transaction, in order, and returns their results in order:
by default one after another; a merge may write them with fewer statements
(:func:`.creations.create_together`)."""

GROUP_MAX: Final = 64
"""Works per transaction at most: a group's first caller waits for the whole group."""


@dataclass(frozen=True, eq=False)
class _Waiting(Generic[T]):
    order: int
    work: Work[T]
    future: asyncio.Future[T]


class GroupedWrites(Generic[T]):
    """Runs works given to :meth:`run` through ``write`` (one transaction each call, run
    again on a deadlock: the store's ``_write``), grouping those that wait."""

    def __init__(self, write: Write[T], merge: Merge[T] | None = None) -> None:
        self._write = write
        self._merge = merge
        self._waiting: list[_Waiting[T]] = []
        self._runner: asyncio.Task[None] | None = None

    async def run(self, work: Work[T], *, order: int = 0) -> T:
        """``work``'s result once committed (with the others of its group), or its error.
        A group's works run by ascending ``order``: the first row each one locks, so that a
        group takes its rows in the store's one global order and does not deadlock with a
        writer that keeps to it. A caller cancelled while its work waits takes it back
        (nothing of it is written); once its group's transaction has begun, the work may
        still commit."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_observed)  # a cancelled caller's error is nobody's
        waiting = _Waiting(order, work, future)
        self._waiting.append(waiting)
        if self._runner is None:
            self._runner = asyncio.create_task(self._drain(), name="grouped-writes")
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if waiting in self._waiting:
                self._waiting.remove(waiting)
            raise

    async def _drain(self) -> None:
        group: list[_Waiting[T]] = []
        try:
            while self._waiting:
                group = sorted(self._waiting[:GROUP_MAX], key=lambda waiting: waiting.order)
                del self._waiting[:GROUP_MAX]
                await self._commit(group)
        finally:
            self._runner = None
            for waiting in group + self._waiting:  # cancelled: the store is closing
                waiting.future.cancel()
            self._waiting.clear()

    async def _commit(self, group: list[_Waiting[T]]) -> None:
        if len(group) > 1:
            works = [waiting.work for waiting in group]
            merge = self._merge

            async def together(connection: AsyncConnection) -> list[T]:
                if merge is not None:
                    return await merge(connection, works)
                return [await work(connection) for work in works]

            try:
                results = await self._write(together)
            except Exception as exc:  # rolled back whole: each on its own says whose it was
                logger.debug(
                    "a group of writes failed; running each on its own",
                    extra={"writes": len(group), "error": type(exc).__name__},
                )
            else:
                for waiting, result in zip(group, results, strict=True):
                    _settle(waiting.future, result)
                return
        for waiting in group:
            try:
                (result,) = await self._write(_single(waiting.work))
            except Exception as exc:
                _fail(waiting.future, exc)
            else:
                _settle(waiting.future, result)


def _single(work: Work[T]) -> Work[list[T]]:
    async def alone(connection: AsyncConnection) -> list[T]:
        return [await work(connection)]

    return alone


def _observed(future: asyncio.Future[T]) -> None:
    if not future.cancelled():
        future.exception()


def _settle(future: asyncio.Future[T], result: T) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[T], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
