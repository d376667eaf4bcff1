"""The Deliverer's own bookkeeping, with stand-ins for the store and Telegram: status reads
shared by concurrent sends, send slots per tier, and the backlog the worker's prefetch reads."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from tgbroadcast.core.domain.model import Broadcast, BroadcastStatus, Content, DeliveryResult
from tgbroadcast.core.metrics import Metrics
from tgbroadcast.core.queue import Queue
from tgbroadcast.core.store import Store
from tgbroadcast.worker.broadcast_states import STATUS_INTERVAL
from tgbroadcast.worker.delivery import Deliverer
from tgbroadcast.worker.recorder import ResultRecorder
from tgbroadcast.worker.telegram import Gate, NotSent, SentMessage, TelegramSender

NOW = datetime(2026, 11, 24, tzinfo=UTC)
BROADCAST = Broadcast(
    id=7, status=BroadcastStatus.RUNNING, content=Content(message="hi"), total=500, sent=0,
    failed=0, created_at=NOW,
)  # fmt: skip


class SlowStore:
    """``get_broadcast`` answers only when ``release`` is set, and counts its calls."""

    def __init__(self, broadcast: Broadcast) -> None:
        self.broadcast = broadcast
        self.reads = 0
        self.asked = asyncio.Event()
        self.release = asyncio.Event()

    async def get_broadcast(self, broadcast_id: int) -> Broadcast:
        assert broadcast_id == self.broadcast.id
        self.reads += 1
        answer = self.broadcast  # the state as of the read's start
        self.asked.set()
        await self.release.wait()
        return answer


class GatedSender:
    """Telegram stand-in: every send waits for ``release``; ``full`` is set once
    ``expected`` sends are in flight."""

    def __init__(self, expected: int = 1) -> None:
        self.release = asyncio.Event()
        self.in_flight = 0
        self.most_in_flight = 0
        self.expected = expected
        self.full = asyncio.Event()

    async def send(
        self, chat_id: int, content: Content, *, gate: Gate | None = None, **_: Any
    ) -> SentMessage:
        if gate is not None and not await gate():
            raise NotSent
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        if self.in_flight >= self.expected:
            self.full.set()
        await self.release.wait()
        self.in_flight -= 1
        return SentMessage(message_id=chat_id, file_id=None)


class FreePermit:
    async def approach(self) -> None:
        return None

    async def use(self) -> None:
        return None

    def release(self) -> None:
        return None


class FreeLimiter:
    async def reserve(self, chat_id: int, *, paid: bool = False) -> FreePermit:
        return FreePermit()

    async def pause(self, seconds: float) -> None:
        return None

    def parked_until(self) -> float | None:
        return None


class ListRecorder:
    def __init__(self) -> None:
        self.results: list[DeliveryResult] = []

    async def record(self, result: DeliveryResult) -> None:
        self.results.append(result)


class HoldsAll:
    def holds(self, user_id: int) -> bool:
        return True


def deliverer(store: object, sender: object, **kwargs: Any) -> Deliverer:
    return Deliverer(
        store=cast(Store, store),
        queue=cast(Queue, object()),
        sender=cast(TelegramSender, sender),
        limiter=kwargs.pop("limiter", FreeLimiter()),
        recorder=cast(ResultRecorder, kwargs.pop("recorder", ListRecorder())),
        metrics=Metrics(),
        max_attempts=3,
        **kwargs,
    )


async def test_sends_that_find_the_status_stale_share_one_read() -> None:
    store = SlowStore(BROADCAST)
    subject = deliverer(store, GatedSender(), concurrency=8)
    checks = [asyncio.create_task(subject.stopping(BROADCAST)) for _ in range(50)]
    await store.asked.wait()
    store.release.set()
    assert await asyncio.gather(*checks) == [False] * 50
    assert store.reads == 1
    # Within the interval the remembered state answers without SQL.
    assert await subject.stopping(BROADCAST) is False
    assert store.reads == 1


async def test_a_job_of_a_newer_generation_does_not_trust_an_older_read() -> None:
    store = SlowStore(BROADCAST)
    store.release.set()
    subject = deliverer(store, GatedSender(), concurrency=8)
    assert await subject.stopping(BROADCAST) is False
    resumed = replace(BROADCAST, resumed_at=NOW)
    store.broadcast = resumed
    assert await subject.stopping(resumed) is False  # read again: it is the current one
    assert store.reads == 2
    assert await subject.stopping(BROADCAST) is True  # the old generation stops


async def test_jobs_of_a_newer_generation_share_one_read_after_a_stale_one() -> None:
    store = SlowStore(BROADCAST)
    subject = deliverer(store, GatedSender(), concurrency=8)
    stale = asyncio.create_task(subject.stopping(BROADCAST))  # its read starts now ...
    await store.asked.wait()
    resumed = replace(BROADCAST, resumed_at=NOW)
    store.broadcast = resumed  # ... and the broadcast is resumed while it runs
    checks = [asyncio.create_task(subject.stopping(resumed)) for _ in range(20)]
    await asyncio.sleep(0)
    store.release.set()
    assert await asyncio.gather(*checks) == [False] * 20
    assert store.reads == 2  # the stale read, then one read for all twenty
    assert await stale is False  # it read the state of its own generation
    assert await subject.stopping(BROADCAST) is True  # the remembered state is the newer one


async def test_a_jobs_own_read_of_its_broadcast_counts_as_the_sends_status_read() -> None:
    store = SlowStore(BROADCAST)
    store.release.set()
    subject = deliverer(store, GatedSender(), concurrency=8)
    read_at = time.monotonic()
    subject.states.saw(BROADCAST, read_at=read_at)
    assert await subject.stopping(BROADCAST) is False
    assert store.reads == 0  # the job's read is fresh: no second one
    paused = replace(BROADCAST, status=BroadcastStatus.PAUSED)
    subject.states.saw(paused, read_at=read_at - 1)  # an older read does not replace a newer one
    assert await subject.stopping(BROADCAST) is False
    subject.states.saw(paused, read_at=read_at + 1)
    assert await subject.stopping(BROADCAST) is True
    assert store.reads == 0
    later = deliverer(store, GatedSender(), concurrency=8)
    later.states.saw(paused, read_at=time.monotonic() - STATUS_INTERVAL)  # a stale read: read again
    assert await later.stopping(BROADCAST) is False
    assert store.reads == 1


@pytest.mark.parametrize(("paid", "slots"), [(False, 3), (True, 5)])
async def test_each_tier_has_its_slots_and_the_rest_wait_as_backlog(paid: bool, slots: int) -> None:
    store = SlowStore(replace(BROADCAST, content=Content(message="hi", allow_paid_broadcast=paid)))
    store.release.set()
    sender = GatedSender(expected=slots)
    recorder = ListRecorder()
    subject = deliverer(store, sender, concurrency=3, paid_concurrency=5, recorder=recorder)
    sends = [
        asyncio.create_task(subject.deliver(store.broadcast, user, claims=HoldsAll()))
        for user in range(1, 21)
    ]
    await sender.full.wait()
    assert subject.backlog(paid=paid) == 20 - slots
    assert subject.backlog(paid=not paid) == 0  # the other tier's backlog is its own
    below = asyncio.create_task(subject.backlog_below(10, paid=paid))
    await asyncio.sleep(0)  # one turn of the loop: it waits, the backlog is 20 - slots
    assert not below.done()
    sender.release.set()
    await below
    assert subject.backlog(paid=paid) < 10
    assert await asyncio.gather(*sends) == [True] * 20
    assert sender.most_in_flight == slots
    assert sorted(r.user_id for r in recorder.results) == list(range(1, 21))
    assert subject.backlog(paid=paid) == 0


class RecordingPermit:
    def __init__(self, events: list[str]) -> None:
        self.events = events

    async def approach(self) -> None:
        self.events.append("approach")

    async def use(self) -> None:
        self.events.append("use")

    def release(self) -> None:
        self.events.append("release")


class RecordingLimiter(FreeLimiter):
    def __init__(self, events: list[str]) -> None:
        self.events = events

    async def reserve(self, chat_id: int, *, paid: bool = False) -> RecordingPermit:  # type: ignore[override]
        self.events.append("reserve")
        return RecordingPermit(self.events)


class RecordingSender:
    def __init__(self, events: list[str]) -> None:
        self.events = events

    async def send(
        self, chat_id: int, content: Content, *, gate: Gate | None = None, **_: Any
    ) -> SentMessage:
        self.events.append("build")
        assert gate is not None
        assert await gate()
        self.events.append("write")
        return SentMessage(message_id=chat_id, file_id=None)


async def test_a_send_is_built_as_its_slot_approaches_and_written_at_it() -> None:
    """Reserved first; the request built (and its connection taken) only once the slot is
    near, not while earlier sends still wait; written once the permit is used."""
    events: list[str] = []
    store = SlowStore(BROADCAST)
    store.release.set()
    subject = deliverer(
        store, RecordingSender(events), limiter=RecordingLimiter(events), concurrency=1
    )
    assert await subject.deliver(BROADCAST, 7, claims=HoldsAll())
    assert events == ["reserve", "approach", "build", "use", "write", "release"]
