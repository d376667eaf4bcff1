"""The one core both transports call: gRPC and HTTP are thin adapters over this.

Guarantees:

* ``send_message`` validates first and writes nothing on bad input; when it returns, the broadcast
  and every recipient are committed in SQL (the truth) and its jobs are on their way to NATS through
  the :class:`~tgbroadcast.core.service.dispatch.Dispatcher`, which finishes the job after a crash
  (see there).
* ``watch_broadcasts`` streams the list: each broadcast as it changes (:mod:`.list_watching`).
* ``watch`` yields every recipient's final outcome exactly once, replayed first then live, and
  ends after the broadcast is final; it holds a bounded number of events in memory however
  slowly it is consumed.
* Every request acts for one bot (``bot=``, decided by the transport): a send's audience,
  idempotency key and recipients are that bot's, users are the bot's users. A broadcast is
  found by id alone among the bots the caller may see (``visible=``, see
  :mod:`tgbroadcast.core.service.bot_access`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Callable,
    Mapping,
    Sequence,
)
from contextlib import aclosing
from dataclasses import dataclass, field, replace

import tgbroadcast.core.tracing as tracing
from tgbroadcast.core.domain.access import DEFAULT_BOT
from tgbroadcast.core.domain.errors import AlreadyExists, FieldViolation, InvalidArgument, NotFound
from tgbroadcast.core.domain.model import (
    Broadcast,
    ClickCounts,
    Content,
    Delivery,
    DeliveryState,
    EditOutcome,
    NewBroadcast,
    RecallOutcome,
    User,
    UserFilter,
    UserProfile,
)
from tgbroadcast.core.domain.states import SENDABLE
from tgbroadcast.core.metrics import Metrics
from tgbroadcast.core.queue import ChangeKind, Queue
from tgbroadcast.core.queue.feeds import EventFeeds
from tgbroadcast.core.rules import page_tokens
from tgbroadcast.core.rules import variants as variant_rules
from tgbroadcast.core.rules.bot_names import validate_bot_name
from tgbroadcast.core.rules.idempotency import request_hash
from tgbroadcast.core.rules.templates import Preview, preview
from tgbroadcast.core.rules.validation import (
    SendRequest,
    validate_content,
    validate_send,
    validate_user_filter,
    validate_users,
)
from tgbroadcast.core.service import reports, watching
from tgbroadcast.core.service.announcing import announce
from tgbroadcast.core.service.bot_access import (
    KnownBots,
    Visible,
    may_see,
    require_known,
    visible_broadcast,
)
from tgbroadcast.core.service.clicks import LinkClicks, link_clicks
from tgbroadcast.core.service.controls import LifecycleOperations
from tgbroadcast.core.service.cursors import Cursor, Floor
from tgbroadcast.core.service.dispatch import Dispatcher
from tgbroadcast.core.service.list_watching import ListWatching, Ready
from tgbroadcast.core.service.quota import PendingRecipientsQuota
from tgbroadcast.core.service.shared_reads import SharedReads
from tgbroadcast.core.service.uploads import stash_album
from tgbroadcast.core.service.user_import import ImportChunk, import_users
from tgbroadcast.core.service.watch_updates import WatchUpdate
from tgbroadcast.core.store import Store
from tgbroadcast.core.store.broadcasts import not_found

logger = logging.getLogger(__name__)

__all__ = ["Accepted", "BroadcastReport", "BroadcastingService", "UsersPage", "WatchUpdate"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Accepted:
    """What SendMessage answers: the broadcast, and whether an earlier request with the same
    idempotency key created it."""

    broadcast: Broadcast
    replayed: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class BroadcastReport:
    """A broadcast with its recipients counted per final outcome, per recall outcome once it
    was recalled, and per outcome of its latest edit once it was edited."""

    broadcast: Broadcast
    outcome_counts: Mapping[DeliveryState, int]
    recall_counts: Mapping[RecallOutcome, int] = field(default_factory=dict)
    edit_counts: Mapping[EditOutcome, int] = field(default_factory=dict)
    variant_counts: Mapping[str, Mapping[DeliveryState, int]] = field(default_factory=dict)
    """Per variant name: its recipients per final outcome (only with variants)."""
    clicks: ClickCounts = field(default_factory=ClickCounts)
    """Its unique clicks (with click tracking)."""
    links: tuple[LinkClicks, ...] = ()
    """Its tracked links and their unique clicks (with click tracking)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UsersPage:
    """A page of users; ``next_page_token`` is empty on the last page."""

    users: tuple[User, ...]
    next_page_token: str


class BroadcastingService(LifecycleOperations):
    """Creates broadcasts, reports on them, and manages users."""

    def __init__(
        self,
        *,
        store: Store,
        queue: Queue,
        dispatcher: Dispatcher,
        metrics: Metrics,
        bots: KnownBots,
        max_user_ids: int,
        max_pending_recipients: int | None = None,
        missing_event_grace: float = 120.0,
        accept_callbacks: bool = False,
        allow_private_callbacks: bool = False,
        on_finished: Callable[[int], None] | None = None,
        public_url: str = "",
    ) -> None:
        """``accept_callbacks``: a webhook secret is configured, so ``callback_url`` is
        accepted; ``allow_private_callbacks``: it may name an internal address
        (``webhook.allow_private_networks``). ``on_finished(broadcast_id)`` is called when a
        watch sees a broadcast end. ``public_url``: ``server.public_url``, where tracked
        links lead (empty: ``track_clicks`` is refused).
        ``max_pending_recipients``: see :mod:`.quota` (None: no limit). ``bots``: the bots
        requests may name (:mod:`.bot_access`)."""
        self._store = store
        self._bots = bots
        self._queue = queue
        self._feeds = EventFeeds(queue)
        self._reads = SharedReads(store)
        self._steps = watching.SharedSteps()
        self._lists = ListWatching(store, queue)
        self._dispatcher = dispatcher
        self._metrics = metrics
        self._max_user_ids = max_user_ids
        self._quota = PendingRecipientsQuota(store, max_pending_recipients)
        self._missing_event_grace = missing_event_grace
        self._accept_callbacks = accept_callbacks
        self._allow_private_callbacks = allow_private_callbacks
        self._on_finished = on_finished
        self._public_url = public_url

    async def send_message(
        self, request: SendRequest, *, created_by: str, bot: str = DEFAULT_BOT
    ) -> Accepted:
        """Store a broadcast of ``bot`` (see :mod:`tgbroadcast.core.rules.idempotency` for keys
        and :mod:`tgbroadcast.core.rules.schedule` for ``send_at``). ``created_by``: the name
        of the API token that sent it (not part of the request: a replay by another token
        returns the broadcast as its first sender created it). ``InvalidArgument`` on ``bot``
        for a bot the service does not know."""
        new = validate_send(
            request,
            max_user_ids=self._max_user_ids,
            accept_callbacks=self._accept_callbacks,
            allow_private_callbacks=self._allow_private_callbacks,
            track_clicks=bool(self._public_url),
        )
        new = replace(new, bot=await require_known(self._bots, bot))
        key = new.idempotency_key
        hashed = request_hash(new, request) if key else ""
        if key and (replayed := await self._earlier(key, hashed, bot)) is not None:
            return Accepted(broadcast=replayed, replayed=True)
        size = await self._quota.size(new)
        try:
            # One reservation covers upload and write: a refused send uploads nothing.
            async with self._quota.admitting(size):
                new = await self._stash_media(new, request)
                with tracing.span("tgbroadcast.store.create_broadcast"):
                    broadcast = await self._store.create_broadcast(
                        new,
                        request_hash=hashed or None,
                        created_by=created_by,
                        stored_bot=not self._bots.is_configured(new.bot),
                        click_base=self._public_url or None,
                    )
        except AlreadyExists:  # an identical request raced this one and won
            if not key or (replayed := await self._earlier(key, hashed, bot)) is None:
                raise
            return Accepted(broadcast=replayed, replayed=True)
        tracing.set_attributes(
            {tracing.BROADCAST_ID: broadcast.id, "tgbroadcast.recipients": broadcast.total}
        )
        self._metrics.broadcast_created(bot=broadcast.bot, recipients=broadcast.total)
        logger.info(
            "broadcast created",
            extra={
                "broadcast_id": broadcast.id,
                "total": broadcast.total,
                "media_type": new.content.media_type.value,
                "created_by": created_by,
                "bot": bot,
            },
        )
        await announce(self._queue, broadcast, ChangeKind.CREATED)
        if broadcast.status in SENDABLE:  # scheduled ones start with the scheduler
            # The ids just written (all its recipients, unless it addresses stored users):
            # its jobs are cut from them rather than read back.
            listed = not new.all_users and new.filter is None
            self._dispatcher.dispatch(
                broadcast.id, recipients=new.user_ids if listed else None, created=broadcast
            )
        return Accepted(broadcast=broadcast)

    async def _stash_media(self, new: NewBroadcast, request: SendRequest) -> NewBroadcast:
        """``new`` with its uploaded bytes (its variants' too) moved to the queue's media
        store; only their names go to SQL."""
        if new.variants:
            variants = [
                replace(variant, content=await self._stash(variant.content, given.content))
                for variant, given in zip(new.variants, request.variants, strict=True)
            ]
            return replace(new, variants=tuple(variants), content=variants[0].content)
        return replace(new, content=await self._stash(new.content, request))

    async def _stash(self, content: Content, request: SendRequest) -> Content:
        if request.media_data:
            name = f"upload-{uuid.uuid4().hex}"
            await self._queue.put_media(name, request.media_data)
            content = replace(content, media_upload=name)
        if any(item.media_data for item in request.album):
            content = await stash_album(content, request.album, self._queue.put_media)
        return content

    async def _earlier(self, key: str, hashed: str, bot: str) -> Broadcast | None:
        """The broadcast an earlier request of ``bot`` with ``key`` created, if it was this
        request (its hash is ``hashed``); :class:`AlreadyExists` if it was another one."""
        found = await self._store.broadcast_by_idempotency_key(key, bot=bot)
        if found is None:
            return None
        broadcast, stored_hash = found
        if stored_hash != hashed:
            raise AlreadyExists(
                f"idempotency key {key!r} was used for broadcast {broadcast.id} with a different "
                "request; use a new key for a new request"
            )
        return broadcast

    async def preview_message(
        self,
        request: SendRequest | None,
        user_id: int,
        *,
        bot: str = DEFAULT_BOT,
        broadcast_id: int = 0,
        variant: str = "",
        visible: Visible = None,
    ) -> Preview:
        """The message as the bot's user ``user_id`` would receive it; nothing is stored or
        sent. The message is ``request``'s, or with ``broadcast_id`` that broadcast's (its
        latest content; its bot's user). With variants: the variant named ``variant``, else
        the user's — chosen as a worker chooses for a stored broadcast; for a request, the
        one the user's language picks (``InvalidArgument`` on ``variant`` when weights would
        pick: the choice depends on the broadcast's id). ``NotFound`` for a user the bot does
        not have, or a broadcast the caller may not see."""
        if broadcast_id < 0:
            raise InvalidArgument.single("broadcast_id", "must be a positive 64-bit number")
        if broadcast_id and request is not None:
            raise InvalidArgument.single(
                "message", "give either a message or a broadcast_id to preview, not both"
            )
        if broadcast_id:
            broadcast = await visible_broadcast(self._store, broadcast_id, visible)
            bot, content, variants = broadcast.bot, broadcast.content, broadcast.variants
        else:
            if request is None:
                raise InvalidArgument.single("message", "give a message, or a broadcast_id")
            try:
                content, variants = validate_content(request)
                await require_known(self._bots, bot)
            except InvalidArgument as exc:  # the request's field is "message": paths start there
                raise InvalidArgument(
                    FieldViolation(f"message.{v.field}", v.description) for v in exc.violations
                ) from None
        found = await self._store.profiles([user_id], bot=bot)
        if user_id not in found:
            of_bot = "" if bot == DEFAULT_BOT else f" of bot {bot!r}"
            raise NotFound(f"user {user_id}{of_bot} not found")
        profile = found[user_id]
        if not variants:
            if variant:
                raise InvalidArgument.single("variant", "the message has no variants")
            return preview(content, user_id, profile)
        if broadcast_id and not variant:  # the variant a recipient was sent, as recorded
            recorded = await self._store.results_among(broadcast_id, [user_id])
            variant = (recorded[0].variant or "") if recorded else ""
        index = variant_rules.preview_choice(
            variants, variant, broadcast_id=broadcast_id, user_id=user_id, profile=profile
        )
        return replace(
            preview(variants[index].content, user_id, profile), variant=variants[index].name
        )

    async def metrics_text(self) -> bytes:
        """The Prometheus exposition of this process's metrics."""
        return await self._metrics.render(queue_depth=self._queue.pending_jobs)

    async def _followup_counts(
        self, broadcast: Broadcast
    ) -> tuple[dict[RecallOutcome, int], dict[EditOutcome, int]]:
        """The broadcast's recall outcomes and those of its latest edit, by kind (none read
        for a broadcast never recalled or edited)."""
        recalls = (
            await self._store.recall_counts(broadcast.id) if broadcast.recall_at is not None else {}
        )
        edits = (
            await self._store.edit_counts(broadcast.id, broadcast.content_version)
            if broadcast.edit_at is not None
            else {}
        )
        return recalls, edits

    async def _counted_by_kind(
        self, broadcast: Broadcast
    ) -> tuple[Broadcast, dict[RecallOutcome, int], dict[EditOutcome, int]]:
        """The recall's and the latest edit's outcomes by kind, and the broadcast read before
        them whose version they are of. A recall's always sum to its ``recalled``; an edit's
        to its ``edited`` only while its version is the latest (the counter counts nothing
        older), so the broadcast is read again after them and they are read again if a newer
        edit began meanwhile."""
        for _ in range(8):  # an edit a moment: never more than a few
            recalls, edits = await self._followup_counts(broadcast)
            if broadcast.edit_at is None:
                break
            latest = await self._store.get_broadcast(broadcast.id)
            if latest.content_version == broadcast.content_version:
                break
            broadcast = latest
        return broadcast, recalls, edits

    async def get_broadcast(self, broadcast_id: int, *, visible: Visible = None) -> BroadcastReport:
        """The broadcast with its counts per outcome; ``NotFound`` if it does not exist or
        its bot is not ``visible``."""
        broadcast = await visible_broadcast(self._store, broadcast_id, visible, actions=True)
        counts = await self._store.outcome_counts(broadcast_id)
        recalls, edits = await self._followup_counts(broadcast)
        by_variant = await self._store.variant_counts(broadcast_id) if broadcast.variants else {}
        clicked = ClickCounts()
        if broadcast.click_key is not None:
            clicked = await self._store.click_counts(broadcast_id)
        return BroadcastReport(
            broadcast=broadcast,
            outcome_counts=counts,
            recall_counts=recalls,
            edit_counts=edits,
            variant_counts=by_variant,
            clicks=clicked,
            links=link_clicks(broadcast, clicked) if broadcast.click_key is not None else (),
        )

    async def upsert_users(self, users: Sequence[UserProfile], *, bot: str = DEFAULT_BOT) -> int:
        """Upsert the bot's users (``InvalidArgument`` on ``bot`` for an unknown bot)."""
        profiles = validate_users(users)
        await require_known(self._bots, bot)
        return await self._store.upsert_users(profiles, bot=bot)

    async def import_users(
        self, chunks: AsyncIterable[ImportChunk], *, bot: str = DEFAULT_BOT
    ) -> int:
        """Upsert the bot's users chunk by chunk, each committed as it arrives (see
        :mod:`tgbroadcast.core.service.user_import`); ``ImportRefused`` names the first bad
        chunk. An unknown bot is ``InvalidArgument`` on ``bot`` before any chunk is read."""
        await require_known(self._bots, bot)
        return await import_users(self._store, chunks, bot=bot)

    async def get_user(self, user_id: int, *, bot: str = DEFAULT_BOT) -> User:
        return await self._store.get_user(user_id, bot=validate_bot_name(bot))

    async def delete_user(self, user_id: int, *, bot: str = DEFAULT_BOT) -> None:
        await self._store.delete_user(user_id, bot=validate_bot_name(bot))

    async def list_users(
        self,
        *,
        page_size: int,
        page_token: str,
        user_filter: UserFilter | None = None,
        active_only: bool = False,
        bot: str = DEFAULT_BOT,
    ) -> UsersPage:
        """A page of the bot's users by id."""
        limit, after = page_tokens.validate_page(page_size, page_token)
        checked = validate_user_filter(user_filter)
        validate_bot_name(bot)
        page = await self._store.list_users(
            after=after, limit=limit, user_filter=checked, active_only=active_only, bot=bot
        )
        return UsersPage(
            users=page.users,
            next_page_token=""
            if page.next_after is None
            else page_tokens.encode(page_tokens.USERS, page.next_after),
        )

    async def list_deliveries(
        self,
        broadcast_id: int,
        *,
        outcomes: Sequence[str],
        page_size: int,
        page_token: str,
        visible: Visible = None,
    ) -> reports.DeliveriesPage:
        """A page of the broadcast's recipients by user id; see
        :mod:`tgbroadcast.core.service.reports`."""
        return await reports.list_deliveries(
            self._store,
            broadcast_id,
            outcomes=outcomes,
            page_size=page_size,
            page_token=page_token,
            visible=visible,
        )

    def export_deliveries(
        self, broadcast_id: int, *, outcomes: Sequence[str], visible: Visible = None
    ) -> AsyncGenerator[tuple[Delivery, ...], None]:
        """Every matching recipient, a page at a time (memory: one page)."""
        return reports.export_deliveries(
            self._store, broadcast_id, outcomes=outcomes, visible=visible
        )

    async def watchable(self, broadcast_id: int, *, visible: Visible = None) -> Broadcast:
        """The broadcast as a watch starts from it: a read begun after this call, shared
        with the watches starting with it (:class:`.shared_reads.SharedReads`: a crowd of
        dashboards opening at once is a couple of queries, not one each); ``NotFound`` if it
        does not exist or its bot is not ``visible``. Never an older read: an edit or a
        recall the caller made just before must be seen, to be followed."""
        broadcast = await self._reads.get(broadcast_id, fresh_after=self._reads.now())
        if not may_see(visible, broadcast.bot):
            raise not_found(broadcast_id)
        return broadcast

    async def watch(
        self,
        broadcast_id: int,
        *,
        visible: Visible = None,
        after: str = "",
        from_now: bool = False,
        on_floor: Callable[[Floor], None] | None = None,
        by_kind: bool = True,
    ) -> AsyncGenerator[list[WatchUpdate], None]:
        """Every outcome of the broadcast once, then a closing update with the final status,
        in batches (:func:`.watching.watch`); ``after``: a cursor of an earlier update to
        resume after (one that cannot be read, or not of this broadcast — counting more than
        it has, or past the events stream's end — starts from the first outcome);
        ``from_now`` (without ``after``): a ``status`` update with the broadcast's status,
        counters and outcome counts now, then only the outcomes recorded from now on, the
        counters going on from those (:meth:`.cursors.Cursor.now`).
        ``on_floor``: told before the first update the floor the watch leaves outcomes out
        within (:mod:`.cursors`: a watch from now's, or that of the stream cursor it resumes
        after), which a transport adds to every cursor it spells of the shared updates.
        ``by_kind``: whether a watch from now's opening carries the recall's and the latest
        edit's outcomes by kind (read for it: a transport that sends no opening does without).
        ``NotFound`` (at the first step) if the broadcast does not exist or its bot is not
        ``visible``."""
        broadcast = await self.watchable(broadcast_id, visible=visible)
        cursor = watching.of_broadcast(Cursor.parse(after) if after else None, broadcast)
        if (
            cursor is not None
            and cursor.kind == "s"
            and cursor.seq >= await self._queue.events_end()
        ):
            cursor = None  # past the stream's end: made up, or of a stream since lost
        if from_now and not after:
            end = await self._queue.events_end()
            broadcast = await self._store.get_broadcast(broadcast_id)  # counters after the end
            # Sent and failed from the counts by outcome: read together, they agree.
            outcomes = await self._store.outcome_counts(broadcast_id)
            recalls: dict[RecallOutcome, int] | None = None
            edits: dict[EditOutcome, int] | None = None
            if by_kind:
                broadcast, recalls, edits = await self._counted_by_kind(broadcast)
            cursor = Cursor.now(end, broadcast, outcomes, recalls, edits)
            if on_floor is not None:
                on_floor(cursor.floor)
            yield [watching.opening(cursor, broadcast, outcomes, recalls or {}, edits or {})]
        elif on_floor is not None and cursor is not None and cursor.kind == "s" and cursor.floor:
            on_floor(cursor.floor)
        async with aclosing(
            watching.watch(
                self._store,
                self._feeds,
                broadcast,
                after=cursor,
                missing_event_grace=self._missing_event_grace,
                on_finished=self._on_finished,
                reads=self._reads,
                steps=self._steps,
            )
        ) as batches:
            async for batch in batches:
                yield batch

    def watch_broadcasts(
        self, *, visible: Visible = None, bot: str = "", statuses: Sequence[str] = ()
    ) -> AsyncGenerator[Ready | Broadcast, None]:
        """``Ready()`` once every later change will be streamed, then each broadcast of the
        ``visible`` bots as it is created, moves or counts outcomes (only ``bot``'s, only
        those whose new status is one of ``statuses``, when given); see
        :mod:`.list_watching`. ``InvalidArgument`` (at the first step) for a malformed bot
        name or an unknown status (``statuses[i]``)."""
        return self._lists.watch(visible=visible, bot=bot, statuses=statuses)
