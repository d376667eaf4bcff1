"""Per-chat pacing over every worker process, paid for only while broadcasts overlap.

Telegram lets a bot send one message per second to a private chat and 20 per minute to a
group. :class:`~tgbroadcast.worker.ratelimit.RateLimiter` paces each chat within its process; a
:class:`ChatPacer` makes that pacing hold over every worker of the bot, through a JetStream
KV bucket. A broadcast sends once per chat, so two sends to one chat on different workers
happen only while the bot has more than one broadcast sending: the pacer touches the bucket
only then, and costs nothing otherwise.

Contention: a count of sending broadcasts, polled from SQL
-----------------------------------------------------------
The pacer asks an injected ``active_broadcasts()`` (the store's count of ``QUEUED`` and
``RUNNING`` broadcasts) at most once per ``poll_interval`` (1 s), from a task of its own that
runs while callers are acquiring and stops when none is. Sends are *contended*, and
coordinated, while the last count is above one, and before any count is known. A second
broadcast starting is therefore noticed within about a second (after an idle spell, the
first caller waits up to a second for a fresh count); until then two sends to one chat, one
from each worker, may come as a burst of two, which Telegram tolerates (a 429, if it comes,
pauses the bot and the send is retried). A failed or slow count (5 s) keeps the last known
value and logs a warning.

Algorithm: one reservation per send, written for the send's budget slot
-----------------------------------------------------------------------
The bucket ``<PREFIX>_CHATS`` (created idempotently; history 1; in memory, as a NATS restart
that forgets it costs at most one burst of two per chat; entries expire ``4 * (1 s +
lateness + the longest interval)`` after their write, 16 s by default) holds a key per
recently contended chat, ``<bot_id>.u<id>`` for a private chat and ``<bot_id>.g<-id>``
for a group: the wall-clock second before which that chat gets no send. A caller holds its
chat's in-process lock and has waited out the in-process interval; when the bot's budget
hands it a slot ``s``, and sends are contended, it reserves the chat for that slot: it
writes ``s + lateness + interval`` (``lateness`` is how long after its slot the budget may
still grant a permit) with ``create`` when the key is absent, else with a compare-and-swap
on the revision it read, and only if the stored time is at or before ``s``. If the stored
time is later, the slot goes back to the budget (the next caller waiting there takes it),
the caller sleeps until that time and takes a new slot. A slot the budget then drops (a late
wake-up, a pause) is reserved again by a compare-and-swap on the caller's own revision, so
a dropped slot does not hold up its own chat. A reservation is written at most one second
before its slot (a caller whose slot lies after a long pause waits until then), so no entry
expires before its time has passed. Uncontended, a send costs no KV operation; contended, one
write for a chat nobody paced in the last few seconds, else a failed create, a read and a
write (or, if the chat is reserved past the slot, a write after the wait).

Guarantees, and their limits
----------------------------
* **Spacing.** While sends are contended, consecutive permits for one chat over all
  processes are at least its interval apart, if the machines' clocks agree (a clock ``d``
  ahead shortens a gap by up to ``d``): a reservation starts at or after the stored time
  it replaces, and the permit comes at most ``lateness`` after its slot.
* **Switching.** Sends made while uncontended are not in the bucket: for about a second
  after a second broadcast starts, a chat may get a burst of two (see above).
* **Failure.** While the bucket cannot be read or written (NATS unreachable), contended
  callers give their slot back and retry every second, logging a warning: no contended send
  goes out unreserved (fail closed, as the bot's budget does).
* **Latency.** A reservation's one to three KV round trips fall between a slot's hand-out
  and the slot (the budget hands slots out about two round trips ahead); a slot they overrun
  by more than the lateness is dropped and reserved again, so coordination assumes a
  LAN-like NATS (round trips of a few milliseconds), as the budget's leases do.
* **Cancellation.** A cancelled acquire leaves its reservation in place: its chat waits
  until the reserved time, at most ``1 s + lateness + interval`` after the write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType

import nats.js.errors
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from tgbroadcast.core.queue.replication import raise_replicas
from tgbroadcast.core.tasks import cancel_and_wait, wait_event
from tgbroadcast.worker.clock import sleep_until

logger = logging.getLogger(__name__)

__all__ = [
    "CONTENTION_POLL_INTERVAL",
    "RESERVE_AHEAD",
    "ActiveBroadcasts",
    "ChatClaim",
    "ChatPacer",
    "ChatPacerStats",
    "SlotClaim",
    "chat_key",
    "chats_bucket",
]

ActiveBroadcasts = Callable[[], Awaitable[int]]
"""How many of the bot's broadcasts are sending (``QUEUED`` or ``RUNNING``): this bot's only,
as another bot's sends never reach this bot's chats."""

CONTENTION_POLL_INTERVAL = 1.0
"""Seconds between two counts of the sending broadcasts, at least."""
RESERVE_AHEAD = 1.0
"""A chat is reserved at most this many seconds before its slot."""
_POLL_TIMEOUT = 5.0
_RETRY_AFTER_ERROR = 1.0


def chats_bucket(prefix: str) -> str:
    """The KV bucket holding the chat reservations of every bot under the queue ``prefix``."""
    return f"{prefix.upper()}_CHATS"


def chat_key(bot_id: int, chat_id: int) -> str:
    """The KV key of a chat (keys cannot hold a minus sign)."""
    return f"{bot_id}.u{chat_id}" if chat_id > 0 else f"{bot_id}.g{-chat_id}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatPacerStats:
    """Counters since the pacer started (for metrics and tests)."""

    contended: bool
    """Whether sends are coordinated through the bucket now."""
    active_broadcasts: int | None
    """The last count of sending broadcasts (``None`` before the first one)."""
    polls: int
    """Counts that answered."""
    poll_failures: int
    """Counts that failed or took too long (the last known value was kept)."""
    kv_operations: int
    """Reads and writes of chat keys, whatever their outcome."""
    chat_reservations: int
    """Writes that reserved a chat."""
    chat_conflicts: int
    """Writes refused because the key had changed (another worker wrote first)."""
    chat_waits: int
    """Slots given back because the chat was reserved past them."""
    chat_errors: int
    """Reservations that failed for an error (NATS unreachable); each waited and retried."""


SlotClaim = Callable[[float], Awaitable[float | None]]
"""Offered each budget slot in turn: ``None`` takes it; a wall-clock time gives it back, and
the caller takes a new slot once that time has come."""


class ChatPacer:
    """The chat reservations of one bot in this process (see the module docs).

    Use it as an async context manager (entering creates the bucket if needed), wrap each
    acquire in :meth:`sending`, and offer its slots to :meth:`claim`.
    """

    def __init__(
        self,
        *,
        js: JetStreamContext,
        prefix: str,
        bot_id: int,
        active_broadcasts: ActiveBroadcasts,
        lateness: float,
        longest_interval: float,
        poll_interval: float = CONTENTION_POLL_INTERVAL,
        replicas: int = 1,
    ) -> None:
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval}")
        self._js = js
        self._replicas = replicas
        self._bucket = chats_bucket(prefix)
        self._bot_id = bot_id
        self._active_broadcasts = active_broadcasts
        self._poll_interval = poll_interval
        self._ttl = 4 * (RESERVE_AHEAD + lateness + longest_interval)
        self.lateness = lateness
        self._kv: KeyValue | None = None
        self._closed = False
        self._count: int | None = None
        self._attempted_at = -float("inf")  # time.monotonic() of the last count asked
        self._polled = asyncio.Event()  # set when the count in progress (or next) is done
        self._poller: asyncio.Task[None] | None = None
        self._senders = 0
        self._polls = 0
        self._poll_failures = 0
        self.kv_operations = 0
        self.reservations = 0
        self.conflicts = 0
        self.waits = 0
        self.errors = 0

    @property
    def contended(self) -> bool:
        """Whether sends are coordinated now: more than one broadcast sending, or unknown."""
        return self._count is None or self._count > 1

    @property
    def stats(self) -> ChatPacerStats:
        return ChatPacerStats(
            contended=self.contended,
            active_broadcasts=self._count,
            polls=self._polls,
            poll_failures=self._poll_failures,
            kv_operations=self.kv_operations,
            chat_reservations=self.reservations,
            chat_conflicts=self.conflicts,
            chat_waits=self.waits,
            chat_errors=self.errors,
        )

    async def __aenter__(self) -> ChatPacer:
        config = api.KeyValueConfig(
            bucket=self._bucket,
            description="tgbroadcast chat pacing: the next send time of contended chats",
            history=1,
            ttl=self._ttl,
            storage=api.StorageType.MEMORY,
            replicas=self._replicas,
        )
        try:
            self._kv = await self._js.create_key_value(config)
        except nats.js.errors.APIError:  # exists with another configuration: use it as is
            await raise_replicas(
                self._js, f"KV_{self._bucket}", self._replicas, what=f"KV bucket {self._bucket}"
            )
            self._kv = await self._js.key_value(self._bucket)
            ttl = (await self._kv.status()).ttl
            if ttl and ttl < self._ttl:
                logger.warning(
                    "chat reservations expire too early; delete the bucket to recreate it",
                    extra={"bucket": self._bucket, "ttl": ttl, "needed": self._ttl},
                )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed = True
        await cancel_and_wait(self._poller)

    @contextlib.asynccontextmanager
    async def sending(self) -> AsyncIterator[None]:
        """Around one acquire: keeps the count polled while it runs; when no count was
        asked for two poll intervals, first waits up to one interval for a fresh count."""
        self._senders += 1
        try:
            if self._poller is None or self._poller.done():
                self._poller = asyncio.create_task(self._poll_loop(), name="chat-pacing-poll")
            if time.monotonic() - self._attempted_at > 2 * self._poll_interval:
                await wait_event(self._polled, self._poll_interval)
            yield
        finally:
            self._senders -= 1

    def claim(self, chat_id: int, interval: float) -> ChatClaim:
        """One acquire's reservation of ``chat_id``, to be offered that acquire's slots."""
        return ChatClaim(self, key=chat_key(self._bot_id, chat_id), interval=interval)

    def check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the rate limiter is closed")

    async def read(self, key: str) -> tuple[float, int]:
        """The stored time and revision of ``key``; ``(0, revision to create at)`` if absent."""
        kv = self._require_kv()
        self.kv_operations += 1
        try:
            entry = await kv.get(key)
        except nats.js.errors.KeyNotFoundError as exc:
            deleted = exc.entry
            return 0.0, (deleted.revision or 0) if deleted else 0
        return _decode(key, entry.value), entry.revision or 0

    async def write(self, key: str, until: float, last: int) -> int | None:
        """Store ``until`` if ``key`` is still at revision ``last`` (0: absent); the new
        revision, or ``None`` if another writer came first."""
        kv = self._require_kv()
        self.kv_operations += 1
        try:
            revision = await kv.update(key, f"{until:.6f}".encode(), last=last)
        except nats.js.errors.KeyWrongLastSequenceError:
            self.conflicts += 1
            return None
        self.reservations += 1
        return revision

    def _require_kv(self) -> KeyValue:
        if self._kv is None:
            raise RuntimeError("use the chat pacer inside `async with`")
        return self._kv

    async def _poll_loop(self) -> None:
        """Count the sending broadcasts once per interval while callers are acquiring."""
        while not self._closed:
            wait = self._attempted_at + self._poll_interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if self._senders == 0:
                return
            await self._poll()

    async def _poll(self) -> None:
        self._attempted_at = time.monotonic()
        was = self.contended
        try:
            count = await asyncio.wait_for(self._active_broadcasts(), _POLL_TIMEOUT)
        except Exception as exc:
            self._poll_failures += 1
            logger.warning(
                "could not count the sending broadcasts; keeping the last count",
                extra={
                    "bot_id": self._bot_id,
                    "active_broadcasts": self._count,
                    "error": type(exc).__name__,
                },
            )
        else:
            self._polls += 1
            self._count = count
            if self.contended != was:
                logger.info(
                    "chat pacing across workers %s",
                    "on" if self.contended else "off",
                    extra={"bot_id": self._bot_id, "active_broadcasts": count},
                )
        finally:
            polled, self._polled = self._polled, asyncio.Event()
            polled.set()


class ChatClaim:
    """One acquire's reservation of its chat: offered each budget slot the acquire gets
    (a :data:`SlotClaim`), it reserves the chat for that slot while sends are contended."""

    __slots__ = ("_floor", "_interval", "_key", "_last", "_pacer", "until")

    def __init__(self, pacer: ChatPacer, *, key: str, interval: float) -> None:
        self._pacer = pacer
        self._key = key
        self._interval = interval
        # At revision ``_last`` the key allows a send from ``_floor`` on: it holds this
        # caller's own reservation (whose slot was dropped) or the one it last waited for.
        self._floor = 0.0
        self._last = 0  # 0: no such revision known, guess that the key is absent
        self.until = 0.0
        """The time this caller last reserved its chat until (0 if it did not)."""

    async def __call__(self, slot: float) -> float | None:
        """``None`` when the chat is reserved for ``slot`` (or needs no reservation), else
        the time to wait for before offering a new slot."""
        pacer = self._pacer
        if not pacer.contended:
            return None
        # The permit comes at the slot, or now if the slot has passed (within the lateness).
        if max(slot, time.time()) < self._floor:  # reserved past it: no KV round trip
            pacer.waits += 1
            return self._floor
        await sleep_until(slot - RESERVE_AHEAD)
        pacer.check_open()
        if not pacer.contended:
            return None
        try:
            return await self._reserve(slot, slot + pacer.lateness + self._interval)
        except Exception as exc:  # fail closed: no unreserved send while contended
            pacer.errors += 1
            self._last = 0  # a write that failed may still have happened
            logger.warning(
                "could not reserve a chat; its send waits and retries",
                extra={"key": self._key, "error": repr(exc)},
            )
            return time.time() + _RETRY_AFTER_ERROR

    async def _reserve(self, slot: float, until: float) -> float | None:
        pacer = self._pacer
        floor, last = self._floor, self._last
        while True:
            revision = await pacer.write(self._key, until, last)
            if revision is not None:
                self._floor, self._last, self.until = floor, revision, until
                return None
            floor, last = await pacer.read(self._key)
            if floor > max(slot, time.time()):
                self._floor, self._last = floor, last
                pacer.waits += 1
                return floor


def _decode(key: str, data: bytes | None) -> float:
    try:
        return float(data or b"0")
    except ValueError:
        logger.error("overwriting a malformed chat reservation", extra={"key": key})
        return 0.0
