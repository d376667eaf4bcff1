"""One tier of a bot's rate budget (free or paid): a GCRA key in NATS KV, leased in blocks of
evenly spaced slots and handed out to this process's callers in order.

Algorithm
---------
The KV bucket ``<PREFIX>_RATE`` (created idempotently) holds, per bot and tier (keys
``<bot_id>.free`` and ``<bot_id>.paid``), the GCRA's *theoretical arrival time* (TAT): the
wall-clock second from which no slot has been handed out yet. Slots are spaced evenly,
``T = (1 + margin) / rate`` apart; there is no burst allowance. A process whose callers need
slots leases ``k`` consecutive ones with one compare-and-swap: ``start = max(TAT, now + lead,
paused_until)``, new TAT ``start + k·T``, written only if the key still has the revision this
process last saw (on a conflict it re-reads and retries). ``k`` is the number of callers
waiting in this process, capped at ``rate * 0.1``: a process leases as soon as that many wait,
with fewer only when its own slots are about to run out (less than half a lease ahead), and
never while its last slot is more than two leases ahead. So a bot costs about ten leases per
second whatever its rate (with several processes, about as many conflicts again), and a
process never holds more slots than callers waiting for them. A caller is handed its slot
(:meth:`TierBudget.reserve`) up to two leases before it comes, does what it can before it
(a worker builds its request), then sleeps until the slot and sends at once
(:meth:`TierBudget.use`). A caller that wakes more than ``LATENESS_SHARE * margin`` after
its slot (a stalled event loop) gives the slot up and takes a new one.

What this guarantees (rate, throughput, pauses, failures) is stated in
:mod:`tgbroadcast.worker.ratelimit`, which composes the tiers.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import nats.js.errors
from nats.js.kv import KeyValue

from tgbroadcast.core.tasks import wait_event
from tgbroadcast.worker.chat_pacing import SlotClaim
from tgbroadcast.worker.clock import sleep_until

logger = logging.getLogger(__name__)

LEASE_PERIOD = 0.1
"""The longest lease, in seconds of a tier's capacity (``rate * LEASE_PERIOD`` slots)."""
LATENESS_SHARE = 0.75
"""How late after its slot a permit may still be granted, as a share of the margin (the
rest of the margin is for clock skew). 0.4 was measured against it in interleaved runs of
the paid scenario: the same busiest second at the simulator (991-995 of 1,000) and the same
rate (docs/profiles.md, Pacing)."""
_MAX_LEAD = 0.05
_RETRY_AFTER_ERROR = 1.0


@dataclass(frozen=True, slots=True)
class TierState:
    """A tier's stored value: the TAT and the latest known resume time."""

    tat: float
    until: float

    def encode(self) -> bytes:
        return json.dumps({"tat": self.tat, "until": self.until}).encode()

    @classmethod
    def decode(cls, data: bytes | None) -> TierState:
        obj = json.loads(data or b"{}")
        return cls(tat=float(obj.get("tat", 0.0)), until=float(obj.get("until", 0.0)))


@dataclass(frozen=True, slots=True)
class _Seen:
    """A tier's stored value as this process last read or wrote it, and its KV revision."""

    state: TierState
    revision: int


class Parked(Exception):
    """The bot's sending is parked until ``until`` (wall-clock seconds): a pause that ends
    more than the limiter's ``park_after`` from now. No slot is held."""

    def __init__(self, until: float) -> None:
        super().__init__(f"parked until {until:.3f}")
        self.until = until


class SharedState:
    """What the tiers of one limiter share: the KV handle, the pause and the counters."""

    __slots__ = (
        "cas_attempts",
        "cas_conflicts",
        "closed",
        "kv",
        "leases",
        "on_park",
        "park_after",
        "paused_until",
        "slots_leased",
        "slots_lost",
    )

    def __init__(self, *, park_after: float = float("inf")) -> None:
        self.kv: KeyValue | None = None
        self.closed = False
        self.paused_until = 0.0
        self.park_after = park_after
        self.on_park: list[Callable[[Parked], None]] = []
        """Called when the bot is parked (each tier fails its waiting callers)."""
        self.leases = 0
        self.cas_attempts = 0
        self.cas_conflicts = 0
        self.slots_leased = 0
        self.slots_lost = 0

    def learn_pause(self, until: float) -> None:
        if until <= self.paused_until:
            return
        self.paused_until = until
        if self.parked_until() is not None:  # the callers waiting for a slot give up
            for park in self.on_park:
                park(Parked(until))

    def parked_until(self) -> float | None:
        """The resume time of a pause that ends more than ``park_after`` from now."""
        until = self.paused_until
        return until if until - time.time() > self.park_after else None

    def require_kv(self) -> KeyValue:
        if self.kv is None:
            raise RuntimeError("use the rate limiter inside `async with`")
        return self.kv


class TierBudget:
    """One GCRA key (a bot's free or paid tier), leased in blocks and handed out in order."""

    def __init__(
        self, *, shared: SharedState, key: str, rate: float, margin: float, name: str
    ) -> None:
        self._shared = shared
        self._key = key
        self._name = name
        self._interval = (1.0 + margin) / rate
        self._lateness = margin * LATENESS_SHARE
        self._max_lease = max(1, round(rate * LEASE_PERIOD))
        self._horizon = 2 * self._max_lease * self._interval
        self._low_water = self._max_lease * self._interval / 2
        self._demand = asyncio.Event()  # set when a full lease's worth of callers waits
        self._waiters: deque[asyncio.Future[float]] = deque()
        self._spare: list[float] = []  # leased slots nobody waits for yet, ascending
        self._leaser: asyncio.Task[None] | None = None
        self._last_slot = 0.0
        self._known: _Seen | None = None
        self._rtt = 0.002
        self.permits = 0
        shared.on_park.append(self._park)

    def _park(self, parked: Parked) -> None:
        """Fail every caller waiting for a slot: the bot is parked."""
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(parked)

    async def reserve(self, claim: SlotClaim | None = None, *, retry: bool = False) -> float:
        """A slot for this caller, not yet waited for: :meth:`use` it or :meth:`release` it.

        With ``claim``, each slot is first offered to it: a time instead of ``None`` gives the
        slot to the next caller, and this one takes a new slot once that time has come. A
        cancelled caller gives its slot to the next one (or keeps it for the next caller), so
        cancellation loses a slot only when nobody takes it in time. ``retry``: the caller
        lost a slot already and goes first.
        """
        while True:
            if self._shared.closed:
                raise RuntimeError("the rate limiter is closed")
            if (parked := self._shared.parked_until()) is not None:
                raise Parked(parked)
            slot = self._take_spare()
            if slot is None:
                future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
                if retry:
                    self._waiters.appendleft(future)
                else:
                    self._waiters.append(future)
                if len(self._waiters) >= self._max_lease:
                    self._demand.set()
                self._ensure_leaser()
                try:
                    slot = await future
                except asyncio.CancelledError:
                    if future.done() and not future.cancelled():
                        self._give_back(future.result())  # cancelled after it was handed one
                    raise
            if claim is None:
                return slot
            try:
                not_before = await claim(slot)
            except BaseException:
                self._give_back(slot)
                raise
            if not_before is None:
                return slot
            self._give_back(slot)
            await sleep_until(not_before)
            await asyncio.sleep(0)  # yield even when that moment has passed
            retry = True

    async def use(self, slot: float) -> bool:
        """Sleep until ``slot`` and count it as a permit: True; False when it cannot be used
        any more (woken more than the lateness after it, or inside a pause) — it is lost and
        the caller reserves another. Cancelled while sleeping, the slot goes to the next
        caller. :class:`Parked` instead of sleeping while the bot is parked."""
        if (parked := self._shared.parked_until()) is not None:
            raise Parked(parked)
        try:
            await sleep_until(slot)
        except asyncio.CancelledError:
            self._give_back(slot)
            raise
        if self._shared.closed:
            raise RuntimeError("the rate limiter is closed")
        if slot < self._shared.paused_until or time.time() > slot + self._lateness:
            self._shared.slots_lost += 1
            return False
        self.permits += 1
        return True

    def release(self, slot: float) -> None:
        """A reserved slot its caller will not use: to the next caller, if in time."""
        self._give_back(slot)

    @property
    def lateness(self) -> float:
        """How late after its slot a permit may still be used, in seconds."""
        return self._lateness

    def close(self) -> asyncio.Task[None] | None:
        """Fail the waiting callers; returns the leaser task, cancelled, for awaiting."""
        if self._leaser is not None:
            self._leaser.cancel()
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_exception(RuntimeError("the rate limiter is closed"))
        self._shared.slots_lost += len(self._spare)
        self._spare.clear()
        return self._leaser

    async def push(self, until: float) -> None:
        """Move the TAT to at least ``until`` (a pause) and record it in the stored value."""
        while True:
            seen = await self._current()
            state = seen.state
            if state.tat >= until and state.until >= until:
                return
            new = TierState(tat=max(state.tat, until), until=max(state.until, until))
            if await self._swap(new, seen.revision):
                return

    def _take_spare(self) -> float | None:
        now = time.time()
        while self._spare:
            slot = self._spare.pop(0)
            if slot + self._lateness >= now and slot >= self._shared.paused_until:
                return slot
            self._shared.slots_lost += 1
        return None

    def _give_back(self, slot: float) -> None:
        """A slot whose caller was cancelled: to the first waiting caller, else to spare."""
        if self._shared.closed or slot + self._lateness < time.time():
            self._shared.slots_lost += 1
            return
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_result(slot)
                return
        bisect.insort(self._spare, slot)

    def _ensure_leaser(self) -> None:
        if self._leaser is None or self._leaser.done():
            self._leaser = asyncio.create_task(self._lease_loop(), name=f"lease-{self._name}")

    async def _lease_loop(self) -> None:
        """Lease for the waiting callers: a full lease as soon as that many wait, fewer
        only when this process's slots are about to run out; never more than ``horizon``
        seconds of slots ahead."""
        while True:
            while self._waiters and self._waiters[0].done():
                self._waiters.popleft()
            if not self._waiters:
                return
            ahead = self._last_slot - time.time()
            if ahead > self._horizon:
                await asyncio.sleep(ahead - self._horizon)
                continue
            waiting = sum(1 for f in self._waiters if not f.done())
            low_water = max(self._low_water, 4 * self._rtt)
            if waiting < self._max_lease and ahead > low_water:
                self._demand.clear()
                await wait_event(self._demand, ahead - low_water)
                continue
            wanted = min(self._max_lease, waiting)
            try:
                start = await self._lease(wanted)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning(
                    "leasing rate slots failed; retrying",
                    extra={"key": self._key, "error": repr(exc)},
                )
                await asyncio.sleep(_RETRY_AFTER_ERROR)
                continue
            self._hand_out(start, wanted)

    async def _lease(self, count: int) -> float:
        """Reserve ``count`` slots in the KV bucket; returns the first slot's time."""
        while True:
            seen = await self._current()
            now = time.time()
            lead = min(_MAX_LEAD, 2 * self._rtt)
            start = max(seen.state.tat, now + lead, self._shared.paused_until)
            new = TierState(tat=start + count * self._interval, until=seen.state.until)
            sent = time.monotonic()
            if await self._swap(new, seen.revision):
                self._rtt = 0.8 * self._rtt + 0.2 * (time.monotonic() - sent)
                self._shared.slots_leased += count
                return start

    def _hand_out(self, start: float, count: int) -> None:
        for i in range(count):
            slot = start + i * self._interval
            while self._waiters:
                future = self._waiters.popleft()
                if not future.done():
                    future.set_result(slot)
                    break
            else:
                bisect.insort(self._spare, slot)
        self._last_slot = max(self._last_slot, start + (count - 1) * self._interval)

    async def _current(self) -> _Seen:
        if self._known is None:
            self._known = await self._read()
        self._shared.learn_pause(self._known.state.until)
        return self._known

    async def _read(self) -> _Seen:
        kv = self._shared.require_kv()
        try:
            entry = await kv.get(self._key)
        except nats.js.errors.KeyNotFoundError as exc:  # also a deleted key: rewrite it
            deleted = exc.entry
            revision = (deleted.revision or 0) if deleted else 0
            return _Seen(TierState(tat=0.0, until=0.0), revision)
        try:
            state = TierState.decode(entry.value)
        except (ValueError, AttributeError) as exc:
            logger.error("overwriting a malformed rate state", extra={"key": self._key})
            logger.debug("malformed value: %r", exc)
            state = TierState(tat=0.0, until=0.0)
        return _Seen(state, entry.revision or 0)

    async def _swap(self, new: TierState, revision: int) -> bool:
        """Write ``new`` if the key is still at ``revision``; False on a conflict."""
        self._shared.cas_attempts += 1
        try:
            written = await self._shared.require_kv().update(self._key, new.encode(), last=revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            self._shared.cas_conflicts += 1
            self._known = None
            return False
        except BaseException:
            self._known = None  # the write may or may not have happened
            raise
        self._known = _Seen(new, written)
        self._shared.leases += 1
        return True
