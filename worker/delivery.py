"""One recipient, from first attempt to final outcome.

Guarantees:

* A ``Deliverer`` sends as one bot (its lane, :mod:`tgbroadcast.worker.lanes`): that bot's
  Telegram client, rate budget and send slots; its metrics and logs carry the bot's name.
* Every send waits for the bot's rate budget (:class:`Limiter`). A 429 pauses the bot's
  sending on every worker for Telegram's ``retry_after`` and the same recipient is retried; it
  never counts as an attempt. Other bots go on sending: their budgets are their own.
* Transient failures (5xx, network errors, timeouts, answers that are not the Bot API's JSON)
  are retried with exponential backoff and full jitter, capped, up to ``max_attempts``; then
  the outcome is ``FAILED`` with the last error. Telegram's refusals are final at once, with
  their outcome (``BLOCKED``, ``CHAT_NOT_FOUND``, ...) and Telegram's description.
* A group that became a supergroup is moved to its new id (the user row too) and sent there.
* Content circuit breaker: when ``content_error_threshold`` recipients of a broadcast were
  refused with the same content error (message too long, bad file URL, ...), the broadcast
  stops as ``FAILED`` with that reason instead of failing every remaining recipient. Counted in
  SQL, so the threshold holds across workers; sends already in flight still finish.
* Media given by URL is fetched by Telegram once per broadcast, and media uploaded through the
  API is uploaded to Telegram once: within a process the first send goes alone, and its
  file_id, stored in SQL, is used for every later send by every worker. (Workers that start
  the same broadcast at the same moment may each make one such first send.)
* Pause, cancel and resume (:mod:`tgbroadcast.core.domain.states`): before each send the
  broadcast's state is checked (:mod:`tgbroadcast.worker.broadcast_states`: read from SQL at
  most every second); a broadcast that is not queued or running, or was resumed since the job
  read it, is not sent to — sends in flight finish and are recorded, the others stay
  ``PENDING``.
* A send's rate slot is reserved first; the state check and the building of the request
  happen while it comes, and the request is written right at the slot (the claim checked
  once more there): the margin of the rate budget is not spent on the worker's own work.
* Before each send (each attempt) the job's claim on the recipient is checked
  (:class:`tgbroadcast.worker.claims.JobClaims`, no SQL): a recipient the job no longer surely holds
  is not sent to, so two jobs never send to one recipient at once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from tgbroadcast.core.domain.access import DEFAULT_BOT
from tgbroadcast.core.domain.errors import (
    ChatMigrated,
    MediaGone,
    PermanentError,
    RateLimited,
    TelegramError,
)
from tgbroadcast.core.domain.model import (
    Broadcast,
    Content,
    DeliveryResult,
    DeliveryState,
    MediaType,
    UserProfile,
)
from tgbroadcast.core.metrics import Metrics
from tgbroadcast.core.queue import Change, ChangeKind, FinishedEvent, Queue
from tgbroadcast.core.rules import clicks, variants
from tgbroadcast.core.rules.rich_content import fetched_by_service
from tgbroadcast.core.rules.templates import personalized, rendered_problem
from tgbroadcast.core.store import Store
from tgbroadcast.worker.broadcast_states import BroadcastStates
from tgbroadcast.worker.fetching import (
    FileIds,
    MediaFetcher,
    fetch_album_items,
    fetch_instead,
    needs_first_send,
    telegram_could_not_fetch,
)
from tgbroadcast.worker.followups import FollowUpJobs
from tgbroadcast.worker.parking import Park
from tgbroadcast.worker.rate_tier import Parked
from tgbroadcast.worker.ratelimit import Limiter
from tgbroadcast.worker.recorder import ResultRecorder
from tgbroadcast.worker.telegram import NotSent, SentMessage, TelegramSender

logger = logging.getLogger(__name__)

FOLLOW_UP_SLOTS = 4
"""Recall and edit call slots per ``worker.concurrency`` (held until a call's outcome is
recorded, which takes longer than a send's); also the bound on calls made again after a kill."""

F = TypeVar("F", bound=FollowUpJobs[Any])
MAX_MIGRATIONS = 2
_SWITCHED = SentMessage(message_id=0, file_id=None)
"""A paid send not made: its broadcast's Stars budget was spent (made again, free)."""


class _Backlog:
    """A count of recipients waiting for a send slot, and one waiter for it to drop."""

    def __init__(self) -> None:
        self.count = 0
        self._threshold = 0
        self._low = asyncio.Event()

    async def below(self, threshold: int) -> None:
        while self.count >= threshold:
            self._low.clear()
            self._threshold = threshold
            await self._low.wait()

    def change(self, by: int) -> None:
        self.count += by
        if self.count < self._threshold:
            self._low.set()


class Claims(Protocol):
    """The recipients a job holds (see :class:`tgbroadcast.worker.claims.JobClaims`)."""

    def holds(self, user_id: int) -> bool: ...


class Deliverer:
    """Sends broadcasts to recipients as ``bot``; shared by every job of a bot's lane."""

    def __init__(
        self,
        *,
        store: Store,
        queue: Queue,
        sender: TelegramSender,
        limiter: Limiter,
        recorder: ResultRecorder,
        metrics: Metrics,
        concurrency: int,
        paid_concurrency: int | None = None,
        max_attempts: int,
        content_error_threshold: int = 5,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        bot: str = DEFAULT_BOT,
        fetcher: MediaFetcher | None = None,
        paid_star_milli: int = 0,
    ) -> None:
        self._bot = bot
        self._fetcher = fetcher  # fetches what Telegram does not (else URLs go as given)
        self._paid_star_milli = paid_star_milli  # a paid send's estimated cost (core.rules.paid)
        self._store = store
        self._queue = queue
        self._sender = sender
        self._limiter = limiter
        self._recorder = recorder
        self._metrics = metrics
        self._sends = asyncio.Semaphore(concurrency)
        self._concurrency = concurrency
        self._paid_sends = asyncio.Semaphore(paid_concurrency or concurrency)
        self._backlogs = {False: _Backlog(), True: _Backlog()}
        """Per tier (``True``: paid), the recipients waiting for a send slot."""
        self._max_attempts = max_attempts
        self._content_error_threshold = content_error_threshold
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self.states = BroadcastStates(store, bot=bot)
        self.park = Park(limiter=limiter, store=store, metrics=metrics, bot=bot)
        # Media file_ids by (broadcast id, media version): an edit may replace the media.
        self._file_ids = FileIds(store, bot=bot)

    def follow_up(self, kind: type[F], *, lease: float, heartbeat_interval: float) -> F:
        """The bot's runner of recall (``Recaller``) or edit (``Editor``) jobs, on this
        deliverer's client, budget and settings, with :data:`FOLLOW_UP_SLOTS` call slots per
        free send slot."""
        return kind(
            store=self._store,
            queue=self._queue,
            sender=self._sender,
            limiter=self._limiter,
            metrics=self._metrics,
            concurrency=FOLLOW_UP_SLOTS * self._concurrency,
            max_attempts=self._max_attempts,
            lease=lease,
            heartbeat_interval=heartbeat_interval,
            backoff_base=self._backoff_base,
            backoff_cap=self._backoff_cap,
            bot=self._bot,
            note_park=self.park.note,
        )

    def backlog(self, *, paid: bool) -> int:
        """Recipients of free (``paid``: paid) broadcasts handed to :meth:`deliver` that still
        wait for a send slot."""
        return self._backlogs[paid].count

    async def backlog_below(self, count: int, *, paid: bool) -> None:
        """Return once fewer than ``count`` recipients of the tier wait for a send slot. For
        one waiter per tier (the worker's fetch loop): a later call replaces the threshold."""
        await self._backlogs[paid].below(count)

    def stopped(self, broadcast_id: int) -> bool:
        """Whether this worker saw the broadcast stop (its remaining sends are skipped)."""
        return self.states.stopped(broadcast_id)

    async def stopping(self, broadcast: Broadcast) -> bool:
        """Whether sends of this job (``broadcast`` as the job read it) must stop (see
        :meth:`BroadcastStates.stopping`)."""
        return await self.states.stopping(broadcast)

    async def aclose(self) -> None:
        """Cancel the status reads still in progress (the worker stopped)."""
        await self.states.aclose()

    def forget(self, broadcast_id: int) -> None:
        self._file_ids.forget(broadcast_id)

    async def deliver(
        self,
        broadcast: Broadcast,
        user_id: int,
        profile: UserProfile | None = None,
        *,
        claims: Claims,
    ) -> bool:
        """Send to one recipient the job holds in ``claims`` and record its final outcome;
        whether it was recorded (not: the broadcast stopped, or the claim was lost, before a
        send could start). ``profile`` fills a personalized broadcast's placeholders
        (``None``: unknown user)."""
        # The slot is held until the outcome is durable: a worker that dies has at most
        # ``concurrency`` (free) plus ``paid_concurrency`` (paid) recipients sent (or being
        # sent) but not recorded — the duplicate bound.
        paid = broadcast.content.allow_paid_broadcast
        slots = self._paid_sends if paid else self._sends
        backlog = self._backlogs[paid]
        backlog.change(+1)
        try:
            await slots.acquire()
        finally:
            backlog.change(-1)
        try:
            # Paused or cancelled while this one waited, or the claim lapsed meanwhile.
            if not claims.holds(user_id) or await self.stopping(broadcast):
                return False
            held = functools.partial(claims.holds, user_id)
            variant = _variant(broadcast, user_id, profile)
            outcome = await self._attempts(broadcast, user_id, profile, held, variant)
            if outcome is None:
                return False
            result, content_error = outcome
            if variant is not None:
                result = replace(result, variant=broadcast.variants[variant].name)
            await self._recorder.record(result)
        finally:
            slots.release()
        if content_error:
            await self._content_breaker(result)
        return True

    async def _attempts(
        self,
        broadcast: Broadcast,
        user_id: int,
        profile: UserProfile | None,
        held: Callable[[], bool],
        variant: int | None,
    ) -> tuple[DeliveryResult, bool] | None:
        """The outcome, and whether the content was at fault; None if the broadcast stopped
        or the recipient is no longer ``held`` before an attempt could start. ``variant``:
        the position of the recipient's variant (``None``: the broadcast has none)."""
        chosen = broadcast.content if variant is None else broadcast.variants[variant].content
        content = personalized(chosen, user_id, profile)
        if content.options.personalize:
            problem = rendered_problem(content)
            if problem is not None:  # this recipient's values make it too long: theirs alone
                refusal = PermanentError(problem, error_code=400)
                return refusal.result(broadcast.id, user_id), refusal.content_error
        content = clicks.for_recipient(content, broadcast, user_id, variant or 0)
        chat_id = user_id
        attempts = migrations = 0
        while True:
            error: TelegramError
            try:
                sent = await self._send(broadcast, chat_id, content, held, variant or 0)
                if sent is None:
                    return None
            except RateLimited as exc:  # not an attempt: every worker pauses, then it is resent
                self._metrics.rate_limited.labels(bot=self._bot).inc()
                logger.warning(
                    "rate limited by Telegram; pausing the bot on every worker",
                    extra={
                        "bot": self._bot,
                        "broadcast_id": broadcast.id,
                        "user_id": user_id,
                        "chat_id": chat_id,
                        "retry_after": exc.retry_after,
                    },
                )
                await self._limiter.pause(exc.retry_after)
                await self.park.note(exc.retry_after)
                continue
            except ChatMigrated as exc:
                migrations += 1
                if migrations > MAX_MIGRATIONS:
                    return exc.result(broadcast.id, user_id), exc.content_error
                logger.info(
                    "group migrated to a supergroup",
                    extra={
                        "bot": self._bot,
                        "broadcast_id": broadcast.id,
                        "user_id": user_id,
                        "chat_id": chat_id,
                        "new_chat_id": exc.new_chat_id,
                    },
                )
                try:
                    await self._store.migrate_chat(chat_id, exc.new_chat_id, bot=broadcast.bot)
                except Exception as store_exc:  # the send goes on; only later ones miss it
                    logger.warning(
                        "moving a migrated chat failed",
                        extra={
                            "bot": self._bot,
                            "broadcast_id": broadcast.id,
                            "user_id": user_id,
                            "chat_id": chat_id,
                            "error": repr(store_exc),
                        },
                    )
                chat_id = exc.new_chat_id
                continue
            except TelegramError as exc:
                if not exc.retryable:
                    logger.debug(
                        "recipient refused by Telegram",
                        extra={
                            "bot": self._bot,
                            "broadcast_id": broadcast.id,
                            "user_id": user_id,
                            "outcome": exc.outcome.value,
                            "error": exc.description,
                        },
                    )
                    return exc.result(broadcast.id, user_id), exc.content_error
                error = exc
            else:
                return (
                    DeliveryResult(
                        broadcast_id=broadcast.id,
                        user_id=user_id,
                        state=DeliveryState.SENT,
                        message_id=sent.message_id,
                        message_ids=sent.message_ids,
                        finished_at=datetime.now(UTC),
                        content_version=broadcast.content_version,
                        stars_milli=self._paid_star_milli if sent.paid else 0,
                    ),
                    False,
                )
            attempts += 1
            if attempts >= self._max_attempts:
                logger.warning(
                    "send failed on its last attempt",
                    extra={
                        "bot": self._bot,
                        "broadcast_id": broadcast.id,
                        "user_id": user_id,
                        "attempt": attempts,
                        "error": error.description,
                    },
                )
                return error.result(broadcast.id, user_id), error.content_error
            self._metrics.retries.labels(bot=self._bot).inc()
            ceiling = min(self._backoff_cap, self._backoff_base * 2**attempts)
            logger.info(
                "transient send failure; retrying",
                extra={
                    "bot": self._bot,
                    "broadcast_id": broadcast.id,
                    "user_id": user_id,
                    "chat_id": chat_id,
                    "attempt": attempts,
                    "error": error.description,
                },
            )
            await asyncio.sleep(random.uniform(0, ceiling))

    async def _send(
        self,
        broadcast: Broadcast,
        chat_id: int,
        content: Content,
        held: Callable[[], bool],
        variant: int,
    ) -> SentMessage | None:
        """One send within the rate budget: the message(s) Telegram made, or None if the
        broadcast stopped (or the recipient is no longer ``held``) before it could be sent."""
        if not needs_first_send(content):
            return await self._send_once(broadcast, chat_id, media=None, content=content, held=held)
        media_key = (broadcast.id, broadcast.media_version, variant)
        media = await self._file_ids.get(media_key)
        if media is not None:
            return await self._send_once(
                broadcast, chat_id, media=media, content=content, held=held
            )
        # No file_id yet: one send at a time fetches the URL; the rest wait for its file_id.
        lock = self._file_ids.first_send(media_key)
        async with lock:
            media = await self._file_ids.get(media_key)
            if media is not None:
                return await self._send_once(
                    broadcast, chat_id, media=media, content=content, held=held
                )
            try:
                upload = None
                if content.media_upload is not None:
                    upload = await self._queue.get_media(content.media_upload)
                elif (
                    self._fetcher is not None
                    and content.media_url
                    and fetched_by_service(content.media_type.value, content.media_url)
                ):
                    upload, name = await self._fetcher.fetch(content.media_url, content.media_type)
                    content = replace(content, media_filename=content.media_filename or name)
                fetched: dict[str, bytes] = {}
                if self._fetcher is not None and content.media_type is MediaType.ALBUM:
                    content, fetched = await fetch_album_items(self._fetcher, content)
                album_uploads = {
                    item.media_upload: fetched[item.media_upload]
                    if item.media_upload in fetched
                    else await self._queue.get_media(item.media_upload)
                    for item in content.options.album
                    if item.media_upload is not None
                }
            except MediaGone as exc:
                # Every recipient would fail alike: the circuit breaker fails the broadcast.
                raise PermanentError(str(exc), error_code=400, content_error=True) from None
            try:
                sent = await self._permitted(
                    broadcast, chat_id, content, held, upload=upload, album_uploads=album_uploads
                )
            except PermanentError as exc:
                if upload or self._fetcher is None or not telegram_could_not_fetch(exc, content):
                    raise
                # Telegram could not fetch it: fetched here and uploaded instead.
                upload, content = await fetch_instead(self._fetcher, exc, content)
                sent = await self._permitted(broadcast, chat_id, content, held, upload=upload)
            if sent is None:
                return None
            if sent.file_id:
                await self._file_ids.store(media_key, sent.file_id)
            return sent

    async def _send_once(
        self,
        broadcast: Broadcast,
        chat_id: int,
        *,
        media: str | None,
        content: Content,
        held: Callable[[], bool],
    ) -> SentMessage | None:
        return await self._permitted(broadcast, chat_id, content, held, media=media)

    async def _permitted(
        self,
        broadcast: Broadcast,
        chat_id: int,
        content: Content,
        held: Callable[[], bool],
        *,
        media: str | None = None,
        upload: bytes | None = None,
        album_uploads: Mapping[str, bytes] | None = None,
    ) -> SentMessage | None:
        """One Telegram call at a slot of the bot's budget; None if the broadcast stopped or
        the recipient is no longer ``held`` before it was written.

        The slot is reserved first; the broadcast's state is checked (maybe read from SQL)
        and the request built while it comes; at the slot the claim is checked once more and
        the request written at once: what varies in time is not between slot and wire."""
        while True:
            if content.allow_paid_broadcast and self.states.paid_stopped(broadcast):
                content = replace(content, allow_paid_broadcast=False)  # its Stars budget spent
            sent = await self._permitted_once(
                broadcast, chat_id, content, held, media, upload, album_uploads
            )
            if sent is not _SWITCHED:
                return sent

    async def _permitted_once(
        self,
        broadcast: Broadcast,
        chat_id: int,
        content: Content,
        held: Callable[[], bool],
        media: str | None,
        upload: bytes | None,
        album_uploads: Mapping[str, bytes] | None,
    ) -> SentMessage | None:
        """:meth:`_permitted` with ``content`` as it is; :data:`_SWITCHED` when a paid send
        found its broadcast's Stars budget spent at its slot (sent again, free)."""
        try:
            permit = await self._limiter.reserve(chat_id, paid=content.allow_paid_broadcast)
        except Parked:  # the job gives its recipients back until the park ends
            return None
        started = 0.0

        async def gate() -> bool:
            nonlocal started
            if not held():  # lapsed while the request was built: the slot goes on unused
                return False
            try:
                await permit.use()
            except Parked:
                return False
            if not held() or (paid and self.states.paid_stopped(broadcast)):
                return False
            started = time.perf_counter()
            return True

        paid = content.allow_paid_broadcast
        try:
            if not held() or await self.stopping(broadcast):
                return None
            await permit.approach()
            sent = await self._sender.send(
                chat_id,
                content,
                media=media,
                upload=upload,
                album_uploads=album_uploads,
                broadcast_id=broadcast.id,
                gate=gate,
            )
        except NotSent:
            return _SWITCHED if paid and held() and self.states.paid_stopped(broadcast) else None
        finally:
            permit.release()  # unused: to the next caller
            if started:
                elapsed = time.perf_counter() - started
                self._metrics.send_seconds.labels(bot=self._bot).observe(elapsed)
        return replace(sent, paid=paid)

    async def _content_breaker(self, result: DeliveryResult) -> None:
        """Stop the broadcast once enough recipients were refused with this content error.
        Errors here are logged, not raised: the next content error checks again."""
        assert result.error is not None
        try:
            count = await self._store.count_errors(result.broadcast_id, result.state, result.error)
            if count < self._content_error_threshold:
                return
            self.states.stop(result.broadcast_id)
            reason = f"stopped after {count} recipients were refused with: {result.error}"
            stopped = await self._store.fail_broadcast(result.broadcast_id, reason)
            if stopped is not None:
                logger.warning(
                    "broadcast stopped by the content circuit breaker",
                    extra={"bot": self._bot, "broadcast_id": stopped.id, "reason": reason},
                )
                await self._queue.publish_events(
                    [FinishedEvent(broadcast_id=stopped.id, status=stopped.status)]
                )
                await self._queue.notify(Change(stopped.id, stopped.bot, ChangeKind.STATUS))
        except Exception as exc:
            logger.warning(
                "content circuit breaker failed",
                extra={"bot": self._bot, "broadcast_id": result.broadcast_id, "error": repr(exc)},
            )


def _variant(broadcast: Broadcast, user_id: int, profile: UserProfile | None) -> int | None:
    """The position of the recipient's variant; ``None`` when the broadcast has none."""
    if not broadcast.variants:
        return None
    language = None if profile is None else profile.language_code
    return variants.choose(
        broadcast.variants, broadcast_id=broadcast.id, user_id=user_id, language_code=language
    )
