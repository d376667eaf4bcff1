"""Chat pacing across worker processes (``worker/chat_pacing.py``) and its contention signal.

Processes are real (``tests/chat_pacing_probe.py``), NATS and the databases too; every check
on timing compares permit times with a chat's interval, never with the machine's speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from nats.js import JetStreamContext, api

from tests.fixtures.nats import isolated_prefix, jetstream, nats_server_url, wait_until
from tests.fixtures.probes import probes
from tests.fixtures.results import sent
from tgbroadcast.core.domain.model import Content, NewBroadcast
from tgbroadcast.core.domain.states import Command
from tgbroadcast.core.store import Store
from tgbroadcast.worker.chat_pacing import (
    CONTENTION_POLL_INTERVAL,
    RESERVE_AHEAD,
    ChatPacerStats,
    chat_key,
    chats_bucket,
)
from tgbroadcast.worker.rate_tier import LATENESS_SHARE
from tgbroadcast.worker.ratelimit import DEFAULT_MARGIN, RateLimiter

BOT = 4343
LATENESS = LATENESS_SHARE * DEFAULT_MARGIN  # how late after its slot the budget grants a permit


@pytest.fixture
async def embedded_url(tmp_path: Path) -> AsyncIterator[str]:
    async with nats_server_url("embedded", tmp_path) as url:
        yield url


@pytest.fixture
async def prefix(embedded_url: str) -> AsyncIterator[str]:
    async with isolated_prefix(embedded_url) as prefix:
        yield prefix


class Count:
    """A settable count of sending broadcasts, as the store would answer it."""

    def __init__(self, value: int) -> None:
        self.value = value
        self.asked = 0

    async def __call__(self) -> int:
        self.asked += 1
        return self.value


@asynccontextmanager
async def one_limiter(
    url: str, prefix: str, count: Count, **options: Any
) -> AsyncIterator[tuple[RateLimiter, JetStreamContext]]:
    """A limiter of the bot on a connection of its own, told ``count`` sending broadcasts."""
    async with (
        jetstream(url) as js,
        RateLimiter(
            js=js, prefix=prefix, bot_id=BOT, active_broadcasts=count, **options
        ) as limiter,
    ):
        yield limiter, js


@asynccontextmanager
async def two_limiters(
    url: str, prefix: str, counts: tuple[int, int], **intervals: float
) -> AsyncIterator[tuple[RateLimiter, RateLimiter, JetStreamContext]]:
    """Two limiters of one bot, as two workers would hold them, told ``counts`` sending
    broadcasts; and the first one's JetStream context."""
    async with (
        one_limiter(url, prefix, Count(counts[0]), rate=100, **intervals) as (a, js),
        one_limiter(url, prefix, Count(counts[1]), rate=100, **intervals) as (b, _),
    ):
        yield a, b, js


def pacing(limiter: RateLimiter) -> ChatPacerStats:
    stats = limiter.stats.chat_pacing
    assert stats is not None
    return stats


SLACK = 0.05
"""Seconds a permit's recorded time may lag the permit: it is read when ``acquire`` returns,
and a loaded machine may run that caller a little late (without pacing the gaps are ~0)."""


def assert_spaced(times: list[float], interval: float) -> None:
    ordered = sorted(times)
    gaps = [b - a for a, b in itertools.pairwise(ordered)]
    assert all(gap >= interval - SLACK for gap in gaps), (interval, gaps)


# -- across processes -----------------------------------------------------------------------


async def test_processes_space_shared_chats_while_contended(
    nats_url: str, queue_prefix: str, tmp_path: Path
) -> None:
    chat_interval, group_interval, rounds = 0.25, 0.6, 3
    chats = [11, 12, -13]
    args = [
        *("--url", nats_url, "--prefix", queue_prefix, "--bot-id", str(BOT)),
        *("--chats", ",".join(map(str, chats)), "--rounds", str(rounds)),
        *("--chat-interval", str(chat_interval), "--group-interval", str(group_interval)),
        *("--active-broadcasts", "2"),
    ]
    async with probes(tmp_path, 2, "tests.chat_pacing_probe", *args) as started:
        start = time.time() + 0.1
        for probe in started:
            probe.start_at(start)
        for probe in started:
            await probe.finish()
    for chat in chats:
        merged = [t for probe in started for t in probe.chat_permits[chat]]
        assert len(merged) == 2 * rounds
        assert_spaced(merged, chat_interval if chat > 0 else group_interval)
    for probe in started:
        stats = probe.stats["chat_pacing"]
        assert stats["contended"]
        assert stats["chat_errors"] == 0
        # Each permit rests on a reservation of its own (a dropped slot may add one).
        assert stats["chat_reservations"] >= len(chats) * rounds
    waits = sum(probe.stats["chat_pacing"]["chat_waits"] for probe in started)
    assert waits >= 1  # the processes did meet on a chat


# -- in one process -------------------------------------------------------------------------


async def test_uncontended_sends_cost_no_kv_operation(embedded_url: str, prefix: str) -> None:
    chat_interval, group_interval = 0.2, 0.3
    count = Count(1)
    async with one_limiter(
        embedded_url,
        prefix,
        count,
        rate=200,
        chat_interval=chat_interval,
        group_interval=group_interval,
    ) as (limiter, _):
        granted: dict[int, list[float]] = {}

        async def send(chat_id: int) -> None:
            await limiter.acquire(chat_id)
            granted.setdefault(chat_id, []).append(time.time())

        started = time.monotonic()
        await asyncio.gather(*(send(c) for c in [5, 5, 5, 6, *range(100, 150), -7, -7]))
        acquiring = time.monotonic() - started
        stats = pacing(limiter)
    assert stats.active_broadcasts == 1
    assert not stats.contended
    assert stats.polls >= 1
    assert stats.kv_operations == 0
    assert stats.chat_reservations == 0
    assert_spaced(granted[5], chat_interval)  # pacing within the process still holds
    assert_spaced(granted[-7], group_interval)
    # Polled while sends wait, each poll at least a second after the last one began.
    assert count.asked <= 1 + acquiring / CONTENTION_POLL_INTERVAL


async def test_contention_flips_while_sends_wait(embedded_url: str, prefix: str) -> None:
    interval = 0.6
    count = Count(1)
    async with one_limiter(
        embedded_url, prefix, count, rate=100, chat_interval=interval, contention_poll_interval=0.05
    ) as (limiter, js):
        kv = await js.key_value(chats_bucket(prefix))
        granted: list[float] = []

        async def send() -> None:
            await limiter.acquire(1)
            granted.append(time.time())

        async def contended() -> bool:
            return pacing(limiter).contended

        async def uncontended() -> bool:
            return not pacing(limiter).contended

        await send()
        assert pacing(limiter).kv_operations == 0
        waiting = asyncio.create_task(send())  # waits out the chat's interval in-process
        count.value = 2
        await wait_until(contended)
        assert not waiting.done()
        await waiting
        # The waiting send reserved its chat (again, if a loaded machine woke it after its
        # rate slot: a missed slot is reserved anew, and so is the chat).
        assert pacing(limiter).chat_reservations >= 1
        entry = await kv.get(chat_key(BOT, 1))
        assert entry.value is not None
        assert float(entry.value) >= granted[1] + interval - SLACK

        waiting = asyncio.create_task(send())
        count.value = 1
        await wait_until(uncontended)
        assert not waiting.done()
        before = pacing(limiter).kv_operations
        await waiting
        assert pacing(limiter).kv_operations == before
    assert_spaced(granted, interval)


async def test_a_reserved_chat_holds_other_limiters(embedded_url: str, prefix: str) -> None:
    interval = 0.4
    async with two_limiters(embedded_url, prefix, (2, 3), group_interval=interval) as (a, b, _):
        granted: list[float] = []

        async def send(limiter: RateLimiter) -> None:
            await limiter.acquire(-500)
            granted.append(time.time())

        await asyncio.gather(send(a), send(b), send(a), send(b))
        stats = [pacing(a), pacing(b)]
    assert len(granted) == 4
    assert_spaced(granted, interval)
    assert sum(s.chat_waits for s in stats) >= 1
    assert all(s.chat_errors == 0 for s in stats)


async def test_a_cancelled_acquire_holds_its_chat_one_interval(
    embedded_url: str, prefix: str
) -> None:
    interval = 0.3
    async with two_limiters(embedded_url, prefix, (2, 2), chat_interval=interval) as (a, b, js):
        kv = await js.key_value(chats_bucket(prefix))
        await a.pause(0.5)  # the slot lies ahead, so the chat is reserved before it comes
        paused_at = time.time()
        task = asyncio.create_task(a.acquire(9))

        async def reserved() -> bool:
            return pacing(a).chat_reservations == 1

        await wait_until(reserved)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        entry = await kv.get(chat_key(BOT, 9))
        assert entry.value is not None
        until = float(entry.value)
        # The reservation ends one interval after its slot, and its slot was at most
        # RESERVE_AHEAD after it was written.
        assert paused_at <= until <= time.time() + RESERVE_AHEAD + LATENESS + interval
        await b.acquire(9)
        assert time.time() >= until  # the other limiter kept to it
        assert a.stats.permits == 0


async def test_unreachable_bucket_holds_contended_sends(embedded_url: str, prefix: str) -> None:
    interval = 0.2
    async with one_limiter(embedded_url, prefix, Count(2), rate=100, chat_interval=interval) as (
        limiter,
        js,
    ):
        await limiter.acquire(3)
        # One reservation, or two if a loaded machine woke the send after its rate slot (a
        # missed slot is reserved anew, and its chat too).
        reserved = pacing(limiter).chat_reservations
        assert reserved >= 1
        await js.delete_key_value(chats_bucket(prefix))
        task = asyncio.create_task(limiter.acquire(4))

        async def failing() -> bool:
            return pacing(limiter).chat_errors >= 1

        await wait_until(failing)
        assert not task.done()  # failed closed: no permit without a reservation
        assert limiter.stats.permits == 1
        restored_at = time.time()
        await js.create_key_value(api.KeyValueConfig(bucket=chats_bucket(prefix), history=1))
        await task  # once the bucket is back, at its next retry
        assert time.time() >= restored_at
        # (More than once if a loaded machine woke the send after its rate slot, as above,
        # waiting out the chat's own earlier reservation.)
        assert pacing(limiter).chat_reservations >= reserved + 1


def test_chat_keys_are_key_safe() -> None:
    assert chat_key(7, 123) == "7.u123"
    assert chat_key(7, -100123) == "7.g100123"


# -- the contention signal ------------------------------------------------------------------


def hello(*user_ids: int, send_at: datetime | None = None) -> NewBroadcast:
    return NewBroadcast(content=Content(message="hello"), user_ids=user_ids, send_at=send_at)


async def test_store_counts_sending_broadcasts(store: Store) -> None:
    assert await store.count_active_broadcasts() == 0
    queued = await store.create_broadcast(hello(1, 2))
    running = await store.create_broadcast(hello(3, 4))
    await store.record_results([sent(running.id, 3)])
    scheduled = await store.create_broadcast(
        hello(5, send_at=datetime.now(UTC) + timedelta(hours=1))
    )
    paused = await store.create_broadcast(hello(6, 7))
    await store.move_broadcast(paused.id, Command.PAUSE)
    completed = await store.create_broadcast(hello(8))
    await store.record_results([sent(completed.id, 8)])
    cancelled = await store.create_broadcast(hello(9))
    await store.move_broadcast(cancelled.id, Command.CANCEL)
    every = [queued, running, scheduled, paused, completed, cancelled]
    statuses = [(await store.get_broadcast(b.id)).status.value for b in every]
    assert statuses == ["queued", "running", "scheduled", "paused", "completed", "cancelled"]
    assert await store.count_active_broadcasts() == 2
    await store.move_broadcast(paused.id, Command.RESUME)  # resumed: sending again
    assert await store.count_active_broadcasts() == 3
