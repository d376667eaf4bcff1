"""One rate budget per bot, shared by every worker process (on any machine) through NATS.

Telegram allows a bot about 30 messages per second (up to 1000 with paid broadcasts), one per
second per private chat and 20 per minute per group, and answers 429 with ``retry_after``
when it disagrees. :class:`RateLimiter` holds the bot-wide budget across every worker, paces
each chat (across every worker while broadcasts overlap), and spreads a 429's pause to every
worker. It needs nothing but the JetStream server the queue already uses.

The algorithm — GCRA in a KV bucket: per tier, a *theoretical arrival time* (TAT) and leased
blocks of slots ``T`` apart — is described in :mod:`tgbroadcast.worker.rate_tier`.

Guarantees, and their limits
----------------------------
* **Rate.** Every slot of a bot's tier, over all processes, is at least ``T`` after the
  previous one, because every lease starts at or after the TAT it replaces. A permit is
  used within ``0.75 * margin`` after its slot. Hence any one-second window of permit
  times holds at most ``rate`` permits (for a fractional rate, at most ``⌈rate⌉``) — if the
  machines' clocks differ by at most ``margin / 4`` (3.75 ms by default; NTP on a LAN keeps
  well under that). Slot times are wall-clock seconds (``time.time()``) because they cross
  machines: a machine whose clock is off sends that much early or late, and when two clocks
  differ by ``d > margin / 4`` a window may hold about ``rate * (d - margin / 4)`` extra
  permits. The guarantee is on permit times; Telegram sees them plus the way to it. A
  worker reserves its slot (:meth:`RateLimiter.reserve`), waits until :data:`APPROACH`
  before it (:meth:`Permit.approach`), then builds its request and takes its connection,
  and uses the permit right before writing it (:meth:`Permit.use`) — so neither the event
  loop's work for a send nor opening a connection is between the slot and the wire (a
  connection that takes longer than the lateness allows costs the slot, never a late
  write): what remains is the wake-up's lateness, the network and the receiving end's own
  delays. ``rate + 1`` consecutive slots span ``1 + margin`` seconds, so Telegram counts
  one message too many in a second only when the first of them reaches it more than the
  margin later (after its slot) than the last. The default 1.5 % leaves 15 ms: in ``make
  bench`` enough at 30, 300 and 1000 per second on two cores that the simulator,
  nats-server and two workers saturate, since the connection and the event loop's turn
  before the body's writing left the way (before, one run in two of the paid scenario had a
  429 there). Raise it (below 0.5) for a distant or jittery link or an overloaded host;
  every point costs a point of throughput.
* **Throughput.** With enough callers waiting, a bot is granted ``rate / (1 + margin)``
  (98.5 % by default). Capacity is lost only to leased slots nobody uses in time: late
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
* **Parking.** A pause that ends more than ``park_after`` seconds from now (a flood wait of
  minutes or hours) *parks* the bot: :meth:`RateLimiter.reserve` and :meth:`Permit.use` raise
  :class:`Parked` at once — also for callers already waiting when the pause becomes known —
  so that workers give their jobs back instead of holding them, their slots and their
  recipients' claims until it ends (:meth:`RateLimiter.parked_until` says until when).
* **Paid broadcasts** use their own key at ``paid_rate``, independent of the free budget:
  free and paid sends running at once may together reach ``rate + paid_rate`` (configure the
  paid rate as the total minus the free rate to keep a combined ceiling). A pause stops both.
* **Per chat**: consecutive permits for one private chat (positive id) are at least
  ``chat_interval`` apart, for a group (negative id) ``group_interval`` (3 s = 20 per minute, evenly
  spaced): in a process, a lock per chat queues its callers, each waiting out the interval before
  asking for a slot; across processes (given ``active_broadcasts``), while more than one broadcast
  is sending, each slot is first reserved for its chat in the KV bucket ``<PREFIX>_CHATS`` — a chat
  reserved past the slot hands the slot on and waits (see :mod:`tgbroadcast.worker.chat_pacing`).
  With one broadcast each chat gets one message, so chats cost no KV operation. The count of sending
  broadcasts is polled from SQL about once a second: for up to a second after a second broadcast
  starts, a chat may get a burst of two (Telegram tolerates it; a 429 pauses and retries). Across
  machines the spacing relies on the clocks.
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
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from tgbroadcast.core.queue.replication import raise_replicas
from tgbroadcast.core.tasks import cancel_and_wait
from tgbroadcast.worker.chat_pacing import (
    CONTENTION_POLL_INTERVAL,
    ActiveBroadcasts,
    ChatPacer,
    ChatPacerStats,
)
from tgbroadcast.worker.clock import sleep_until
from tgbroadcast.worker.rate_tier import LATENESS_SHARE, Parked, SharedState, TierBudget

logger = logging.getLogger(__name__)

__all__ = [
    "APPROACH",
    "DEFAULT_MARGIN",
    "Limiter",
    "Parked",
    "Permit",
    "RateLimiter",
    "RateLimiterStats",
    "SlotPermit",
    "rate_bucket",
]

DEFAULT_MARGIN = 0.015
"""Seconds added to each second's worth of slots: 3/4 absorb late wake-ups, 1/4 clock skew.

In ``[0, 0.5)``; the setting ``telegram.rate_margin``."""
APPROACH = 0.01
"""Seconds before its slot a send builds its request and takes its connection
(:meth:`Permit.approach`). Built at the reservation instead (up to two leases ahead), each
waiting send held its request's objects and a connection for a tenth of a second: at
1000/s the garbage collector's young generations then walked a hundred waiting sends' worth
of objects at each collection (four times as many collections over 2 ms), and the stalls
cost a tenth of the slots (docs/profiles.md)."""
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
        replicas: int = 1,
        park_after: float = float("inf"),
    ) -> None:
        if bot_id <= 0:
            raise ValueError(f"bot_id must be positive, got {bot_id}")
        if not (rate > 0 and paid_rate > 0):
            raise ValueError("rate and paid_rate must be positive")
        if chat_interval < 0 or group_interval < 0:
            raise ValueError("chat_interval and group_interval must not be negative")
        if not 0 <= margin < 0.5:
            raise ValueError(f"margin must be in [0, 0.5), got {margin}")
        if park_after <= 0:
            raise ValueError("park_after must be positive")
        self._js = js
        self._replicas = replicas
        self._bucket = rate_bucket(prefix)
        self._pause_key = f"{bot_id}.pause"
        self._chat_interval = chat_interval
        self._group_interval = group_interval
        self._shared = SharedState(park_after=park_after)
        self._free = TierBudget(
            shared=self._shared, key=f"{bot_id}.free", rate=rate, margin=margin, name="free"
        )
        self._paid = TierBudget(
            shared=self._shared, key=f"{bot_id}.paid", rate=paid_rate, margin=margin, name="paid"
        )
        self._pacer: ChatPacer | None = None
        if active_broadcasts is not None and max(chat_interval, group_interval) > 0:
            self._pacer = ChatPacer(
                js=js,
                prefix=prefix,
                bot_id=bot_id,
                active_broadcasts=active_broadcasts,
                lateness=margin * LATENESS_SHARE,
                longest_interval=max(chat_interval, group_interval),
                poll_interval=contention_poll_interval,
                replicas=replicas,
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
            replicas=self._replicas,
        )
        try:
            self._shared.kv = await self._js.create_key_value(config)
        except nats.js.errors.APIError:  # exists with another configuration: use it as is
            await raise_replicas(
                self._js, f"KV_{self._bucket}", self._replicas, what=f"KV bucket {self._bucket}"
            )
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
        await cancel_and_wait(self._free.close(), self._paid.close(), self._watch_task)
        if self._pacer is not None:
            await self._pacer.__aexit__(exc_type, exc, tb)

    async def acquire(self, chat_id: int, *, paid: bool = False) -> None:
        """Return at the moment this caller may send one message to ``chat_id``
        (:meth:`reserve`, then the permit's :meth:`Permit.use`)."""
        await (await self.reserve(chat_id, paid=paid)).use()

    async def reserve(self, chat_id: int, *, paid: bool = False) -> Permit:
        """A permit to send one message to ``chat_id`` at a slot to come: prepare the send,
        then :meth:`Permit.use` it right before the request leaves (or :meth:`Permit.release`
        it), so that the work between the two is not on the wire's time.

        The permit counts against the bot's free budget, or with ``paid`` against the paid
        one, and keeps the chat's pacing within this process, and across processes while
        more than one broadcast is sending. Its slot never falls in a pause this limiter
        knows of when it is used. Cancellation is safe and loses at most this caller's slot
        (and, while contended, holds the chat until its reservation ends).
        """
        budget = self._paid if paid else self._free
        return Permit(self, budget, chat_id, await self._reserve(budget, chat_id, retry=False))

    def parked_until(self) -> float | None:
        """When the bot's parked sending resumes (wall-clock seconds); None unless a pause
        known here ends more than ``park_after`` seconds from now."""
        return self._shared.parked_until()

    async def _reserve(self, budget: TierBudget, chat_id: int, *, retry: bool) -> _Reserved:
        if self._shared.closed:
            raise RuntimeError("the rate limiter is closed")
        interval = self._chat_interval if chat_id > 0 else self._group_interval
        if interval <= 0:
            return _Reserved(await budget.reserve(retry=retry))
        chat = self._chats.get(chat_id)
        if chat is None:
            chat = self._chats[chat_id] = _Chat()
        pacer = self._pacer
        chat.users += 1
        try:
            async with pacer.sending() if pacer else contextlib.nullcontext(), chat.lock:
                await sleep_until(chat.ready)
                claim = pacer.claim(chat_id, interval) if pacer else None
                slot = await budget.reserve(claim, retry=retry)
                # The send leaves between the slot and its lateness: the chat's next one waits
                # the interval after the latest of those.
                before = chat.ready
                chat.ready = max(slot + budget.lateness + interval, claim.until if claim else 0.0)
                return _Reserved(slot, chat, before, chat.ready)
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
                    extra={"key": self._pause_key, "seconds": seconds, "error": repr(exc)},
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


@dataclass(frozen=True, slots=True)
class _Reserved:
    """A reserved slot and what it moved: the chat's ``ready`` from ``before`` to ``after``."""

    slot: float
    chat: _Chat | None = None
    before: float = 0.0
    after: float = 0.0

    def unsent(self) -> None:
        """The slot was not sent at: the chat is ready when it was before (unless a later
        reservation moved it since)."""
        if self.chat is not None and self.chat.ready == self.after:
            self.chat.ready = self.before


class Permit:
    """A slot of a bot's budget for one message to one chat (:meth:`RateLimiter.reserve`)."""

    __slots__ = ("_budget", "_chat_id", "_limiter", "_reserved", "used")

    def __init__(
        self, limiter: RateLimiter, budget: TierBudget, chat_id: int, reserved: _Reserved
    ) -> None:
        self._limiter = limiter
        self._budget = budget
        self._chat_id = chat_id
        self._reserved: _Reserved | None = reserved
        self.used = False

    @property
    def slot(self) -> float | None:
        """The wall-clock second of the slot this permit holds (``None`` once used or
        released)."""
        return None if self._reserved is None else self._reserved.slot

    async def approach(self) -> None:
        """Return :data:`APPROACH` seconds before this permit's slot (at once if that has
        passed, or when it holds none): the moment to build the request and take its
        connection, then :meth:`use` it."""
        if self._reserved is not None:
            await sleep_until(self._reserved.slot - APPROACH)

    async def use(self) -> None:
        """Return at this permit's slot (a new one, reserved first, if it was used already
        or is missed: woken too late, or paused meanwhile — a missed slot gives the chat
        back its readiness, so the new one does not wait out the chat's interval)."""
        retry = False
        while True:
            reserved = self._reserved
            self._reserved = None
            if reserved is None:
                reserved = await self._limiter._reserve(self._budget, self._chat_id, retry=retry)
            try:
                used = await self._budget.use(reserved.slot)
            except (asyncio.CancelledError, Parked):
                reserved.unsent()
                raise
            if used:
                self.used = True
                return
            reserved.unsent()
            retry = True

    def release(self) -> None:
        """The slot, unused, goes to the next caller, and the chat is ready as it was
        before (nothing if the permit was used)."""
        reserved, self._reserved = self._reserved, None
        if reserved is not None:
            reserved.unsent()
            self._budget.release(reserved.slot)


class SlotPermit(Protocol):
    """What a sender needs of a :class:`Permit` (tests pass fakes)."""

    async def approach(self) -> None: ...

    async def use(self) -> None: ...

    def release(self) -> None: ...


class Limiter(Protocol):
    """What a sender needs of a :class:`RateLimiter` (tests pass fakes)."""

    async def reserve(self, chat_id: int, *, paid: bool = False) -> SlotPermit: ...

    async def pause(self, seconds: float) -> None: ...

    def parked_until(self) -> float | None: ...


def _decode_until(data: bytes | None) -> float:
    try:
        return float(json.loads(data or b"{}").get("until", 0.0))
    except (ValueError, AttributeError):
        logger.error("ignoring a malformed pause value")
        return 0.0
