"""One rate budget per bot, shared by every worker process (on any machine) through NATS.

Telegram allows a bot about 30 messages per second (up to 1000 with paid broadcasts), one per
second per private chat and 20 per minute per group, and answers 429 with ``retry_after``
when it disagrees. :class:`RateLimiter` holds the bot-wide budget across every worker, paces
each chat (across every worker while broadcasts overlap), and spreads a 429's pause to every
worker. It needs nothing but the JetStream server the queue already uses.

Algorithm: GCRA in a KV bucket, with leased blocks of evenly spaced slots
--------------------------------------------------------------------------
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
process never holds more slots than callers waiting for them. Each caller sleeps until its
own slot and returns then. A caller that wakes more than ``0.75 * margin`` after its slot
(a stalled event loop) gives the slot up and takes a new one.

Guarantees, and their limits
----------------------------
* **Rate.** Every slot of a bot's tier, over all processes, is at least ``T`` after the
  previous one, because every lease starts at or after the TAT it replaces. A permit is
  granted within ``0.75 * margin`` after its slot. Hence any one-second window of permit
  times holds at most ``rate`` permits (for a fractional rate, at most ``⌈rate⌉``) — if the
  machines' clocks differ by at most ``margin / 4`` (10 ms by default; NTP on a LAN keeps
  well under that). Slot times are wall-clock seconds (``time.time()``) because they cross
  machines: a machine whose clock is off sends that much early or late, and when two clocks
  differ by ``d > margin / 4`` a window may hold about ``rate * (d - margin / 4)`` extra
  permits. The guarantee is on permit times; Telegram sees them plus the network's and the
  event loop's jitter. ``rate + 1`` consecutive slots span ``1 + margin`` seconds, so
  Telegram counts one message too many in a second only when the first of them is delayed
  more than the last by over the margin, less the first one's wake-up lateness (usually a
  millisecond or two). With 2 % that was 20 ms, and benchmarks saw a few 429s at 30 per
  second; the default 4 % leaves 40 ms. Raise it (below 0.5) for a distant or jittery link;
  every point costs a point of throughput.
* **Throughput.** With enough callers waiting, a bot is granted ``rate / (1 + margin)``
  (96 % by default). Capacity is lost only to leased slots nobody uses in time: late
  wake-ups, slots that fall inside a pause, slots of cancelled callers that no other caller
  of the process takes, and the leases of a process that dies (about three leases, 0.3 s of
  the bot's capacity). A process whose event loop or leaser stalls for longer than the slots
  it holds (0.1 to 0.2 s) leaves a gap nobody fills.
* **Pause.** :meth:`RateLimiter.pause` stops this process at once; it writes the resume time
  to ``<bot_id>.pause``, which every limiter watches (KV watch: a few milliseconds on a LAN),
  and moves both tiers' TAT to at least the resume time, so every lease made afterwards starts
  after the pause. A slot leased before the pause that falls inside it is never used: its
  caller checks the known resume time when it wakes and takes a new slot. Were a watch broken,
  the process would still learn the pause at its next lease (its CAS conflicts and the re-read
  value carries the resume time).
* **Paid broadcasts** use their own key at ``paid_rate``, independent of the free budget:
  free and paid sends running at once may together reach ``rate + paid_rate`` (configure the
  paid rate as the total minus the free rate to keep a combined ceiling). A pause stops both.
* **Per chat**: consecutive permits for one private chat (positive id) are at least
  ``chat_interval`` apart, for a group (negative id) ``group_interval`` (3 s = 20 per minute,
  evenly spaced): in a process, a lock per chat queues its callers, each waiting out the
  interval before asking for a slot; across processes (given ``active_broadcasts``), while
  more than one broadcast is sending, each slot is first reserved for its chat in the KV
  bucket ``<PREFIX>_CHATS`` — a chat reserved past the slot hands the slot on and waits (see
  :mod:`tgbroadcast.worker.chat_pacing`). With one broadcast each chat gets one message, so chats cost no
  KV operation. The count of sending broadcasts is polled from SQL about once a second: for
  up to a second after a second broadcast starts, a chat may get a burst of two (Telegram
  tolerates it; a 429 pauses and retries). Across machines the spacing relies on the clocks.
* **Failure.** While NATS is unreachable no new slots are leased: callers wait (fail closed)
  and the leaser retries every second, logging a warning. A pause that cannot be written
  still pauses this process. A cancelled :meth:`RateLimiter.acquire` hands its slot to the
  next caller of this process; the slot is lost only if nobody takes it in time. A chat
  that cannot be reserved while contended is not sent to: its caller gives the slot back and
  retries every second. An idle limiter costs one KV watch and no timers (the count of
  sending broadcasts is polled only while callers are acquiring).

Give every worker of a bot the same ``rate``, ``paid_rate`` and ``margin`` (the settings
``telegram.rate_limit``, ``telegram.paid_rate_limit`` and ``telegram.rate_margin``).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import logging
import time
from collections import deque
from dataclasses import dataclass
from types import TracebackType

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from tgbroadcast.worker.chat_pacing import (
    CONTENTION_POLL_INTERVAL,
    ActiveBroadcasts,
    ChatPacer,
    ChatPacerStats,
    SlotClaim,
)
from tgbroadcast.worker.clock import sleep_until

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_MARGIN", "LEASE_PERIOD", "RateLimiter", "RateLimiterStats", "rate_bucket"]

DEFAULT_MARGIN = 0.04
"""Seconds added to each second's worth of slots: 3/4 absorb late wake-ups, 1/4 clock skew.

In ``[0, 0.5)``; the setting ``telegram.rate_margin``."""
LEASE_PERIOD = 0.1
"""The longest lease, in seconds of a tier's capacity (``rate * LEASE_PERIOD`` slots)."""
_LATENESS_SHARE = 0.75  # of the margin; the rest is for clock skew
_MAX_LEAD = 0.05
_RETRY_AFTER_ERROR = 1.0
_SWEEP_INTERVAL = 5.0


def rate_bucket(prefix: str) -> str:
    """The KV bucket holding the rate state of every bot under the queue ``prefix``."""
    return f"{prefix.upper()}_RATE"


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimiterStats:
    """Counters since the limiter started (for metrics)."""

    permits: int
    """Free-tier acquires that returned."""
    paid_permits: int
    """Paid-tier acquires that returned."""
    leases: int
    """Successful KV updates: leases of slots, and pauses written to a tier."""
    cas_attempts: int
    """KV compare-and-swap attempts, successful or not."""
    cas_conflicts: int
    """CAS attempts refused because another worker wrote first."""
    slots_leased: int
    slots_lost: int
    """Leased slots never used: late wake-up, inside a pause, caller cancelled, closed."""
    paused_until: float
    """Wall-clock second before which this limiter grants nothing (0 when never paused)."""
    chat_pacing: ChatPacerStats | None
    """The cross-process chat pacing's counters (``None`` without it)."""


@dataclass(frozen=True, slots=True)
class _State:
    """A tier's stored value: the TAT and the latest known resume time."""

    tat: float
    until: float

    def encode(self) -> bytes:
        return json.dumps({"tat": self.tat, "until": self.until}).encode()

    @classmethod
    def decode(cls, data: bytes | None) -> _State:
        obj = json.loads(data or b"{}")
        return cls(tat=float(obj.get("tat", 0.0)), until=float(obj.get("until", 0.0)))


class _Shared:
    """What the tiers of one limiter share: the KV handle, the pause and the counters."""

    __slots__ = (
        "cas_attempts",
        "cas_conflicts",
        "closed",
        "kv",
        "leases",
        "paused_until",
        "slots_leased",
        "slots_lost",
    )

    def __init__(self) -> None:
        self.kv: KeyValue | None = None
        self.closed = False
        self.paused_until = 0.0
        self.leases = 0
        self.cas_attempts = 0
        self.cas_conflicts = 0
        self.slots_leased = 0
        self.slots_lost = 0

    def learn_pause(self, until: float) -> None:
        self.paused_until = max(self.paused_until, until)

    def require_kv(self) -> KeyValue:
        if self.kv is None:
            raise RuntimeError("use the rate limiter inside `async with`")
        return self.kv


class _Budget:
    """One GCRA key (a bot's free or paid tier), leased in blocks and handed out in order."""

    def __init__(self, *, shared: _Shared, key: str, rate: float, margin: float, name: str) -> None:
        self._shared = shared
        self._key = key
        self._name = name
        self._interval = (1.0 + margin) / rate
        self._lateness = margin * _LATENESS_SHARE
        self._max_lease = max(1, round(rate * LEASE_PERIOD))
        self._horizon = 2 * self._max_lease * self._interval
        self._low_water = self._max_lease * self._interval / 2
        self._demand = asyncio.Event()  # set when a full lease's worth of callers waits
        self._waiters: deque[asyncio.Future[float]] = deque()
        self._spare: list[float] = []  # leased slots nobody waits for yet, ascending
        self._leaser: asyncio.Task[None] | None = None
        self._last_slot = 0.0
        self._known: tuple[_State, int] | None = None  # the value and revision last seen
        self._rtt = 0.002
        self.permits = 0

    async def acquire(self, claim: SlotClaim | None = None) -> None:
        """Return at this caller's slot: at or after it, within the lateness, not paused.

        A cancelled caller gives its slot to the next one (or keeps it for the next caller),
        so cancellation loses a slot only when nobody takes it in time. With ``claim``, each
        slot is first offered to it: a time instead of ``None`` gives the slot to the next
        caller, and this one takes a new slot once that time has come.
        """
        retry = False
        while True:
            if self._shared.closed:
                raise RuntimeError("the rate limiter is closed")
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
            if claim is not None:
                try:
                    not_before = await claim(slot)
                except BaseException:
                    self._give_back(slot)
                    raise
                if not_before is not None:
                    self._give_back(slot)
                    await sleep_until(not_before)
                    await asyncio.sleep(0)  # yield even when that moment has passed
                    retry = True
                    continue
            try:
                await sleep_until(slot)
            except asyncio.CancelledError:
                self._give_back(slot)
                raise
            if self._shared.closed:
                raise RuntimeError("the rate limiter is closed")
            if slot < self._shared.paused_until or time.time() > slot + self._lateness:
                self._shared.slots_lost += 1
                retry = True
                continue
            self.permits += 1
            return

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
            state, revision = await self._current()
            if state.tat >= until and state.until >= until:
                return
            new = _State(tat=max(state.tat, until), until=max(state.until, until))
            if await self._swap(new, revision):
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
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._demand.wait(), ahead - low_water)
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
            state, revision = await self._current()
            now = time.time()
            lead = min(_MAX_LEAD, 2 * self._rtt)
            start = max(state.tat, now + lead, self._shared.paused_until)
            new = _State(tat=start + count * self._interval, until=state.until)
            sent = time.monotonic()
            if await self._swap(new, revision):
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

    async def _current(self) -> tuple[_State, int]:
        if self._known is None:
            self._known = await self._read()
        self._shared.learn_pause(self._known[0].until)
        return self._known

    async def _read(self) -> tuple[_State, int]:
        kv = self._shared.require_kv()
        try:
            entry = await kv.get(self._key)
        except nats.js.errors.KeyNotFoundError as exc:  # also a deleted key: rewrite it
            deleted = exc.entry
            return _State(tat=0.0, until=0.0), (deleted.revision or 0) if deleted else 0
        try:
            state = _State.decode(entry.value)
        except (ValueError, AttributeError) as exc:
            logger.error("overwriting a malformed rate state", extra={"key": self._key})
            logger.debug("malformed value: %r", exc)
            state = _State(tat=0.0, until=0.0)
        return state, entry.revision or 0

    async def _swap(self, new: _State, revision: int) -> bool:
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
        self._known = (new, written)
        self._shared.leases += 1
        return True


class _Chat:
    __slots__ = ("lock", "ready", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.ready = 0.0  # wall-clock second before which this chat gets no permit
        self.users = 0


class RateLimiter:
    """The bot's send budget, shared through NATS by every worker (see the module docs).

    Use it as an async context manager: entering creates the KV bucket if needed and starts
    watching for pauses; leaving fails pending :meth:`acquire` calls with ``RuntimeError``.
    """

    def __init__(
        self,
        *,
        js: JetStreamContext,
        prefix: str,
        bot_id: int,
        rate: float,
        paid_rate: float = 1000.0,
        chat_interval: float = 1.0,
        group_interval: float = 3.0,
        margin: float = DEFAULT_MARGIN,
        active_broadcasts: ActiveBroadcasts | None = None,
        contention_poll_interval: float = CONTENTION_POLL_INTERVAL,
    ) -> None:
        if bot_id <= 0:
            raise ValueError(f"bot_id must be positive, got {bot_id}")
        if not (rate > 0 and paid_rate > 0):
            raise ValueError("rate and paid_rate must be positive")
        if chat_interval < 0 or group_interval < 0:
            raise ValueError("chat_interval and group_interval must not be negative")
        if not 0 <= margin < 0.5:
            raise ValueError(f"margin must be in [0, 0.5), got {margin}")
        self._js = js
        self._bucket = rate_bucket(prefix)
        self._pause_key = f"{bot_id}.pause"
        self._chat_interval = chat_interval
        self._group_interval = group_interval
        self._shared = _Shared()
        self._free = _Budget(
            shared=self._shared, key=f"{bot_id}.free", rate=rate, margin=margin, name="free"
        )
        self._paid = _Budget(
            shared=self._shared, key=f"{bot_id}.paid", rate=paid_rate, margin=margin, name="paid"
        )
        self._pacer: ChatPacer | None = None
        if active_broadcasts is not None and max(chat_interval, group_interval) > 0:
            self._pacer = ChatPacer(
                js=js,
                prefix=prefix,
                bot_id=bot_id,
                active_broadcasts=active_broadcasts,
                lateness=margin * _LATENESS_SHARE,
                longest_interval=max(chat_interval, group_interval),
                poll_interval=contention_poll_interval,
            )
        self._chats: dict[int, _Chat] = {}
        self._next_sweep = 0.0
        self._pause_lock = asyncio.Lock()
        self._wanted_until = 0.0  # the latest resume time asked of this limiter
        self._published_until = 0.0  # the resume time known to be in the pause key
        self._watch_task: asyncio.Task[None] | None = None

    @property
    def stats(self) -> RateLimiterStats:
        s = self._shared
        return RateLimiterStats(
            permits=self._free.permits,
            paid_permits=self._paid.permits,
            leases=s.leases,
            cas_attempts=s.cas_attempts,
            cas_conflicts=s.cas_conflicts,
            slots_leased=s.slots_leased,
            slots_lost=s.slots_lost,
            paused_until=s.paused_until,
            chat_pacing=None if self._pacer is None else self._pacer.stats,
        )

    async def __aenter__(self) -> RateLimiter:
        config = api.KeyValueConfig(
            bucket=self._bucket,
            description="tgbroadcast rate limits: GCRA state and pauses per bot",
            history=1,
            storage=api.StorageType.FILE,
        )
        try:
            self._shared.kv = await self._js.create_key_value(config)
        except nats.js.errors.APIError:  # exists with another configuration: use it as is
            self._shared.kv = await self._js.key_value(self._bucket)
        if self._pacer is not None:
            await self._pacer.__aenter__()
        watcher = await self._shared.kv.watch(self._pause_key)
        self._watch_task = asyncio.create_task(self._watch(watcher), name="rate-pause-watch")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._shared.closed = True
        tasks = [self._free.close(), self._paid.close(), self._watch_task]
        for task in tasks:
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in tasks if t is not None), return_exceptions=True)
        if self._pacer is not None:
            await self._pacer.__aexit__(exc_type, exc, tb)

    async def acquire(self, chat_id: int, *, paid: bool = False) -> None:
        """Return at the moment this caller may send one message to ``chat_id``.

        The permit counts against the bot's free budget, or with ``paid`` against the paid
        one, and keeps the chat's pacing within this process, and across processes while
        more than one broadcast is sending. Never returns during a pause this limiter knows
        of. Cancellation is safe and loses at most this caller's slot (and, while contended,
        holds the chat until its reservation ends).
        """
        if self._shared.closed:
            raise RuntimeError("the rate limiter is closed")
        budget = self._paid if paid else self._free
        interval = self._chat_interval if chat_id > 0 else self._group_interval
        if interval <= 0:
            await budget.acquire()
            return
        chat = self._chats.get(chat_id)
        if chat is None:
            chat = self._chats[chat_id] = _Chat()
        pacer = self._pacer
        chat.users += 1
        try:
            async with pacer.sending() if pacer else contextlib.nullcontext(), chat.lock:
                await sleep_until(chat.ready)
                claim = pacer.claim(chat_id, interval) if pacer else None
                await budget.acquire(claim)
                chat.ready = max(time.time() + interval, claim.until if claim else 0.0)
        finally:
            chat.users -= 1
            self._sweep_chats()

    async def pause(self, seconds: float) -> None:
        """No worker of this bot starts a send before ``seconds`` from now (a 429).

        This process stops at once; the others as soon as their watch delivers the new
        resume time. Errors writing it are logged, not raised: the local pause holds anyway.
        """
        if seconds <= 0:
            return
        until = time.time() + seconds
        self._shared.learn_pause(until)
        self._wanted_until = max(self._wanted_until, until)
        async with self._pause_lock:
            until = self._wanted_until  # one write for a burst of 429s
            if until <= self._published_until:
                return
            try:
                await self._publish_pause(until)
                await asyncio.gather(self._free.push(until), self._paid.push(until))
            except (nats.errors.Error, TimeoutError) as exc:
                logger.warning(
                    "could not share the pause with other workers",
                    extra={"seconds": seconds, "error": repr(exc)},
                )

    async def _publish_pause(self, until: float) -> None:
        kv = self._shared.require_kv()
        while True:
            try:
                entry = await kv.get(self._pause_key)
                current, revision = _decode_until(entry.value), entry.revision or 0
            except nats.js.errors.KeyNotFoundError as exc:
                current = 0.0
                revision = (exc.entry.revision or 0) if exc.entry else 0
            if current >= until:
                break
            self._shared.cas_attempts += 1
            try:
                await kv.update(self._pause_key, json.dumps({"until": until}).encode(), revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                self._shared.cas_conflicts += 1
                continue
            break
        self._published_until = max(self._published_until, until)

    async def _watch(self, watcher: KeyValue.KeyWatcher) -> None:
        """Learn every pause written by any worker. The watch is an ordered consumer, which
        nats-py re-creates by itself after missed heartbeats or a reconnect."""
        try:
            async for entry in watcher:
                if entry is None or not entry.value:
                    continue
                until = _decode_until(entry.value)
                self._shared.learn_pause(until)
                self._published_until = max(self._published_until, until)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]

    def _sweep_chats(self) -> None:
        now = time.time()
        if now < self._next_sweep:
            return
        self._next_sweep = now + _SWEEP_INTERVAL
        stale = [c for c, chat in self._chats.items() if chat.users == 0 and chat.ready <= now]
        for chat_id in stale:
            del self._chats[chat_id]


def _decode_until(data: bytes | None) -> float:
    try:
        return float(json.loads(data or b"{}").get("until", 0.0))
    except (ValueError, AttributeError):
        logger.error("ignoring a malformed pause value")
        return 0.0
