"""The store: the service's source of truth for users, broadcasts and deliveries.

Guarantees, on every backend (SQLite, PostgreSQL, MySQL/MariaDB):

* Every write method is one transaction: it happens entirely or not at all.
* A pending delivery is held by at most one claim token at a time
  (:meth:`Store.claim_recipients`), until the claim is released, lapses, or the delivery
  becomes final: workers send only to recipients they hold.
* A delivery leaves ``PENDING`` once. :meth:`Store.record_results` makes a delivery final
  only while it is still ``PENDING`` (under a row lock) and counts it in its broadcast's
  ``sent`` or ``failed`` in the same transaction, so however many workers, in however many
  processes, race on one recipient, it is counted exactly once; a broadcast becomes
  ``COMPLETED`` exactly once, in the call that counted its last recipient.
* Writers lock rows in one global order (deliveries by ``(broadcast_id, user_id)``, then
  broadcasts by id; users by ``(bot, id)``), so they queue instead of deadlocking; a transaction the
  database still aborts for a deadlock or lock timeout is run again (up to
  :data:`MAX_ATTEMPTS` times).
* Statements are bulk and chunked: a broadcast with a million recipients is written in
  seconds (COPY on PostgreSQL; see :mod:`.bulk`), in user id order, without a parameter per
  row and without exceeding any backend's parameter or packet limits.
* Users are a bot's (``bot``, default :data:`~tgbroadcast.core.domain.access.DEFAULT_BOT`):
  the same Telegram id under two bots is two users, with their own profile, tags and
  ``active`` state. Every user operation takes the bot and touches only its users; a
  broadcast's audience is its bot's users, and a blocked result deactivates only the user of
  the broadcast's bot. Idempotency keys are per bot; broadcast ids are unique across bots.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

from sqlalchemy import event, text
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tgbroadcast.core.domain.access import DEFAULT_BOT
from tgbroadcast.core.domain.errors import AlreadyExists
from tgbroadcast.core.domain.model import (
    SYSTEM_ACTOR,
    Broadcast,
    BroadcastStatus,
    Delivery,
    DeliveryResult,
    DeliveryState,
    NewBroadcast,
    UserFilter,
)
from tgbroadcast.core.domain.recipients import DistinctIds
from tgbroadcast.core.domain.states import Command
from tgbroadcast.core.store import (
    actions,
    broadcasts,
    clicks,
    creations,
    deliveries,
    dialects,
    quota,
    transitions,
    variant_counts,
)
from tgbroadcast.core.store.bots import BotRows
from tgbroadcast.core.store.broadcasts import Creation
from tgbroadcast.core.store.callbacks import CallbackRows
from tgbroadcast.core.store.checkpoints import background_checkpoints
from tgbroadcast.core.store.clicks import ClickRows
from tgbroadcast.core.store.deliveries import Claimed, Recorded
from tgbroadcast.core.store.dispatching import DispatchRows
from tgbroadcast.core.store.edits import EditRows
from tgbroadcast.core.store.engine import ConnectionOptions, create_engine, migrate, writer
from tgbroadcast.core.store.grouping import GroupedWrites
from tgbroadcast.core.store.recalls import RecallRows
from tgbroadcast.core.store.results import ResultRows
from tgbroadcast.core.store.sending import SendingRows
from tgbroadcast.core.store.statistics import PlannerStatistics
from tgbroadcast.core.store.user_rows import UserRows
from tgbroadcast.core.store.users import check_bot

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_ATTEMPTS: Final = 5
"""Runs of a write transaction that the database keeps aborting for deadlocks."""

GROUPED_RECIPIENTS: Final = 100
"""New broadcasts with up to this many listed recipients are written with those waiting
beside them in one transaction (:mod:`.grouping`), by their lowest recipient: the users
they add are locked in id order."""


class Store(
    BotRows,
    CallbackRows,
    RecallRows,
    EditRows,
    SendingRows,
    ClickRows,
    DispatchRows,
    ResultRows,
    UserRows,
):
    """Users, broadcasts and their deliveries in SQL; safe to share between tasks.

    Any number of ``Store`` instances, in any number of processes, may use one database at
    once. Construct with :meth:`open`; call :meth:`migrate` before first use of a database.
    """

    def __init__(self, engine: AsyncEngine, options: ConnectionOptions | None = None) -> None:
        self._engine = engine
        self._writer = writer(engine)
        # SQLite has one writer at a time: this process's writers take turns here, in order,
        # instead of in SQLite's busy handler, whose growing sleeps let a waiting writer miss
        # the lock again and again (a send's p99 was most of a second). Other processes still
        # queue on the database lock.
        self._ordered_writes = engine.dialect.name == "sqlite"
        self._write_turn = asyncio.Lock()
        # Small new broadcasts that arrive while one is written commit together (group commit).
        self._creates: GroupedWrites[Broadcast] = GroupedWrites(
            self._write, merge=creations.create_together
        )
        self._options = options
        self._pinger: AsyncEngine | None = None
        self.statistics = PlannerStatistics(engine)  # analyzed after big writes

    @classmethod
    def open(
        cls, url: str, options: ConnectionOptions | None = None
    ) -> contextlib.AbstractAsyncContextManager[Store]:
        """A store on ``url`` (a SQLAlchemy URL string); its connections close on exit.

        ``options`` (``DatabaseSettings`` is one) size its pool and bound waits and statements
        (see :mod:`.engine`); by default those of :class:`~.engine.EngineOptions`. A call
        finding no free connection within ``pool_timeout`` raises
        :class:`~.engine.PoolTimeout`; a statement cancelled for ``statement_timeout``,
        :class:`~.engine.StatementTimeout` (its transaction rolled back).

        ``ValueError`` on entering for an unsupported backend or an in-memory SQLite URL.
        """
        return _opened(cls, url, options)

    async def migrate(self) -> None:
        """Bring the schema to the newest revision (a no-op if it is there already); safe to
        run from several processes at once: they take turns."""
        await migrate(self._engine)

    async def ping(self) -> None:
        """One trivial query (``SELECT 1``): returns once the database answered (readiness).

        On a connection of its own, opened for the query and closed after it (an engine
        without a pool, made on first use): under load, checking one out of the shared pool
        waits for the pool, not the database, and readiness would fail on a healthy one.
        """
        if self._pinger is None:
            url = self._engine.url.render_as_string(hide_password=False)
            self._pinger = create_engine(url, self._options, pooled=False)
        async with self._pinger.connect() as connection:
            await connection.execute(text("SELECT 1"))

    def on_error(self, callback: Callable[[], None]) -> None:
        """``callback()`` at every error the database raises for this store's calls (metrics):
        lost connections, timeouts, deadlocks, ...; not the constraint violations the store
        answers itself (a taken idempotency key), nor :meth:`ping`'s, nor a pooled connection
        found stale by its pre-ping (replaced at once; a database restart leaves many); a new
        connection the database refuses counts too."""

        def handle_error(context: ExceptionContext) -> None:
            if context.is_pre_ping:
                return
            if not isinstance(context.sqlalchemy_exception, IntegrityError):
                callback()

        def do_connect(dialect: Any, record: Any, cargs: Any, cparams: Any) -> Any:
            # A connection the database refuses as a socket error (asyncpg's OSError) reaches
            # no handle_error; the driver's own errors (asyncmy's) do.
            try:
                return dialect.connect(*cargs, **cparams)
            except Exception as exc:
                if not isinstance(exc, dialect.loaded_dbapi.Error):
                    callback()
                raise

        event.listen(self._engine.sync_engine, "handle_error", handle_error)
        event.listen(self._engine.sync_engine, "do_connect", do_connect)

    async def close(self) -> None:
        """Close the connections of the pool and of :meth:`ping`."""
        await self.statistics.close()
        await self._engine.dispose()
        if self._pinger is not None:
            await self._pinger.dispose()

    # -- broadcasts -----------------------------------------------------------------------

    async def create_broadcast(
        self,
        new: NewBroadcast,
        *,
        request_hash: str | None = None,
        created_by: str = "",
        stored_bot: bool = False,
        click_base: str | None = None,
    ) -> Broadcast:
        """Store a broadcast and one ``PENDING`` delivery per recipient, in one transaction;
        with ``new.track_clicks``, a new random click key and ``click_base``. Broadcast and
        recipients are ``new.bot``'s: with ``user_ids`` (repeats dropped), a recipient the bot
        has no user row for gets one (active, no profile), existing users are left untouched;
        with ``all_users``, the bot's users active then; with ``filter``, those matching it
        (resolved in SQL, see :mod:`.audiences`). ``total`` counts the deliveries. It is
        ``QUEUED``, not dispatched; with no recipient, ``COMPLETED`` and dispatched at once.
        ``created_by``: the sending API token's name (at most 64 characters). ``AlreadyExists``
        when the bot has a broadcast with ``new.idempotency_key``. ``stored_bot``: a bot
        created through the API, its row read-locked meanwhile (a delete waits, then sees the
        broadcast); ``InvalidArgument`` on ``bot`` if it was deleted. A big one has
        PostgreSQL's statistics refreshed after it (:mod:`.statistics`).
        """
        check_bot(new.bot)
        user_ids = new.user_ids  # validated ones are DistinctIds
        if not isinstance(user_ids, DistinctIds) and len(set(user_ids)) != len(user_ids):
            user_ids = tuple(dict.fromkeys(user_ids))
        if sum((bool(user_ids), new.all_users, new.filter is not None)) > 1:
            raise ValueError("a broadcast has one audience: user_ids, all_users or filter")
        create = Creation(
            new=new,
            user_ids=user_ids,
            now=_now(),
            request_hash=request_hash,
            created_by=created_by,
            stored_bot=stored_bot,
            click_base=click_base,
        )
        try:
            if 0 < len(user_ids) <= GROUPED_RECIPIENTS:
                created = await self._creates.run(create, order=min(user_ids))
            else:
                created = await self._write(create)
        except IntegrityError:
            key = new.idempotency_key
            found = (
                None if key is None else await self.broadcast_by_idempotency_key(key, bot=new.bot)
            )
            if found is not None:
                raise AlreadyExists(f"idempotency key {key!r} is taken") from None
            raise
        self.statistics.grew(created.total)  # committed: PostgreSQL's planner may look
        return created

    async def get_broadcast(self, broadcast_id: int, *, actions: bool = False) -> Broadcast:
        """The broadcast (with its ``actions`` when asked: one more query);
        :class:`~tgbroadcast.core.domain.errors.NotFound` if there is none."""
        async with self._engine.connect() as connection:
            broadcast = await broadcasts.fetch(connection, broadcast_id)
            if not actions:
                return broadcast
            (with_actions,) = await _actions.with_history(connection, [broadcast])
            return with_actions

    async def move_broadcast(
        self, broadcast_id: int, command: Command, *, actor: str = SYSTEM_ACTOR
    ) -> Broadcast:
        """Apply a lifecycle command with one conditional update (see
        :mod:`tgbroadcast.core.domain.states`); the broadcast as it left it, with its actions.
        ``NotFound``, or ``FailedPrecondition`` naming the state that does not allow it. A
        pause, resume or cancel is recorded as done by ``actor`` (an API token's name) in the
        same transaction."""
        return await self._write(
            lambda connection: transitions.move(
                connection, broadcast_id, command, now=_now(), actor=actor
            )
        )

    async def list_broadcasts(
        self,
        *,
        statuses: Collection[BroadcastStatus],
        before: int | None,
        limit: int,
        bots: Collection[str] | None = None,
    ) -> list[Broadcast]:
        """Up to ``limit`` broadcasts in any of ``statuses`` (any when empty) with ``id <
        before``, newest first, with their actions; of every bot when ``bots`` is ``None``,
        else only of those bots (nothing for an empty collection)."""
        if limit < 1:
            raise ValueError(f"limit must be positive, not {limit}")
        async with self._engine.connect() as connection:
            return await transitions.page(
                connection, statuses=statuses, before=before, limit=limit, bots=bots
            )

    async def due_broadcasts(self, now: datetime, *, limit: int = 100) -> list[int]:
        """Ids of ``SCHEDULED`` broadcasts with ``send_at <= now``, earliest first."""
        async with self._engine.connect() as connection:
            return await transitions.due(connection, now=now, limit=limit)

    async def broadcast_by_idempotency_key(
        self, key: str, *, bot: str = DEFAULT_BOT
    ) -> tuple[Broadcast, str | None] | None:
        """The bot's broadcast created with idempotency ``key``, and its request's hash
        (keys are per bot)."""
        async with self._engine.connect() as connection:
            return await transitions.by_idempotency_key(connection, key, bot=bot)

    async def mark_generation_dispatched(
        self, broadcast_id: int, resumed_at: datetime | None
    ) -> bool:
        """Record that every job of the generation ``resumed_at`` names is queued; False
        (nothing written) if the broadcast was resumed since."""
        return await self._write(
            lambda connection: transitions.mark_generation_dispatched(
                connection, broadcast_id, resumed_at
            )
        )

    async def undispatched_broadcasts(self, *, created_before: datetime | None = None) -> list[int]:
        """Ids of broadcasts not final whose jobs are not all queued yet, oldest first;
        only those created before ``created_before`` when given."""
        async with self._engine.connect() as connection:
            return await broadcasts.undispatched(connection, created_before=created_before)

    async def pending_recipients(self) -> int:
        """Recipients not yet final over all broadcasts not yet final, from the broadcasts'
        counters (deliveries are not read)."""
        async with self._engine.connect() as connection:
            return await quota.pending_recipients(connection)

    async def audience_size(self, user_filter: UserFilter | None, *, bot: str = DEFAULT_BOT) -> int:
        """How many recipients ``all_users`` (``user_filter`` None) or a filter has now among
        the bot's users."""
        async with self._engine.connect() as connection:
            return await quota.audience_size(connection, user_filter, bot=bot)

    async def count_active_broadcasts(self, *, bot: str | None = None) -> int:
        """Broadcasts that may be sending now: ``QUEUED`` or ``RUNNING`` (not scheduled,
        paused or final), of every bot (``None``) or of ``bot``. One indexed count; the
        workers' chat pacing polls it (see :mod:`tgbroadcast.worker.chat_pacing`)."""
        async with self._engine.connect() as connection:
            return await broadcasts.count_active(connection, bot=bot)

    # -- deliveries -----------------------------------------------------------------------

    async def job_batches(
        self, broadcast_id: int, *, batch_size: int, read_size: int = 10_000
    ) -> AsyncIterator[tuple[int, ...]]:
        """All the broadcast's recipients, ascending, cut into ``batch_size`` batches the same
        way every time whatever their states — so a re-dispatch yields the same jobs, which
        JetStream then drops as duplicates — leaving out batches with nobody ``PENDING``.

        Batch ``k`` is always recipients ``k * batch_size`` to ``(k + 1) * batch_size - 1`` in
        ascending user id order (the last one may be shorter), whatever ``read_size``.
        Recipients are read keyset-paged, ``read_size`` per query (a million recipients are a
        hundred queries, not ten thousand), with no connection held while the caller works on
        a batch; memory is bounded by ``read_size + batch_size`` recipients.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, not {batch_size}")
        if read_size < 1:
            raise ValueError(f"read_size must be positive, not {read_size}")
        after: int | None = None
        rows: list[tuple[int, str]] = []  # read, not yet cut into batches
        last_page = False
        while not last_page:
            statement = deliveries.recipients_page(broadcast_id, after=after, limit=read_size)
            async with self._engine.connect() as connection:
                page = (await connection.execute(statement)).all()
            last_page = len(page) < read_size
            if page:
                after = page[-1][0]
            rows.extend((user_id, state) for user_id, state in page)
            # Whole batches only, but for the last one: batches do not depend on the pages.
            cut = len(rows) if last_page else len(rows) - len(rows) % batch_size
            for start in range(0, cut, batch_size):
                batch = rows[start : start + batch_size]
                if any(state == DeliveryState.PENDING.value for _, state in batch):
                    yield tuple(user_id for user_id, _ in batch)
            del rows[:cut]

    async def pending_among(self, broadcast_id: int, user_ids: Sequence[int]) -> frozenset[int]:
        """Those of ``user_ids`` that are recipients of the broadcast and still ``PENDING``."""
        async with self._engine.connect() as connection:
            return await deliveries.pending_among(connection, broadcast_id, user_ids)

    async def claim_recipients(
        self, broadcast_id: int, user_ids: Sequence[int], *, token: str, lease_seconds: float
    ) -> Claimed:
        """Hold, for ``token`` (1 to 32 characters), for ``lease_seconds`` from now, those of
        ``user_ids`` still ``PENDING`` that no other token holds; extends ``token``'s own
        claims. One transaction; see :func:`.deliveries.claim`.

        A claim lapses at ``now + lease_seconds`` by the clock of the process that made it,
        and is taken over by comparing with the clock of the process taking it over: the
        processes' clocks must agree to well within a lease (NTP).
        """
        now = _now()
        until = now + timedelta(seconds=lease_seconds)
        return await self._write(
            lambda connection: deliveries.claim(
                connection, broadcast_id, user_ids, token=token, now=now, until=until
            )
        )

    async def release_claims(
        self, broadcast_id: int, user_ids: Sequence[int], *, token: str
    ) -> int:
        """Drop ``token``'s claims on those of ``user_ids`` (others' are left); how many."""
        if not user_ids:
            return 0
        return await self._write(
            lambda connection: deliveries.release(connection, broadcast_id, user_ids, token=token)
        )

    async def delivery_report(
        self,
        broadcast_id: int,
        *,
        states: frozenset[DeliveryState] = frozenset(),
        after_user_id: int | None,
        limit: int,
    ) -> list[Delivery]:
        """Up to ``limit`` recipients in any of ``states`` (any state when empty) with
        ``user_id > after_user_id``, by user id; ``NotFound`` for an unknown broadcast."""
        if limit < 1:
            raise ValueError(f"limit must be positive, not {limit}")
        async with self._engine.connect() as connection:
            page = await deliveries.report_page(
                connection, broadcast_id, states=states, after=after_user_id, limit=limit
            )
            if not page:
                await broadcasts.fetch(connection, broadcast_id)  # NotFound if there is none
                return page
            sent = [d.user_id for d in page if d.state is DeliveryState.SENT]
            opened = await clicks.per_recipient(connection, broadcast_id, sent) if sent else {}
            return [dataclasses.replace(d, clicks=opened.get(d.user_id, 0)) for d in page]

    async def record_results(self, results: Sequence[DeliveryResult]) -> Recorded:
        """Make final the deliveries these results are for, in one transaction.

        A result counts only if its delivery exists and is ``PENDING`` at that moment; the
        others (already final, unknown, or repeated within ``results``, where the first
        wins) are ignored. Counted results add to their broadcast's ``sent``/``failed``; a
        ``QUEUED`` broadcast becomes ``RUNNING``, and one whose every delivery is final
        becomes ``COMPLETED`` with ``finished_at`` set. A counted ``BLOCKED`` or
        ``DEACTIVATED`` result makes inactive the user of the broadcast's bot (only that
        bot's: the same id under another bot stays active). ``ValueError``, and nothing
        written, for a ``PENDING`` state or a naive ``finished_at``.
        """
        for result in results:
            if not result.state.is_final:
                raise ValueError(f"result for user {result.user_id} is not final")
            if result.finished_at.utcoffset() is None:
                raise ValueError(f"result for user {result.user_id}: finished_at is naive")
        ordered = sorted(results, key=lambda result: (result.broadcast_id, result.user_id))
        if not ordered:
            return Recorded(recorded=(), finished=())
        return await self._write(
            lambda connection: deliveries.record(connection, ordered, now=_now())
        )

    async def fail_broadcast(self, broadcast_id: int, reason: str) -> Broadcast | None:
        """Stop a broadcast that still has work as ``FAILED`` with ``reason``.

        Returns the stopped broadcast, or ``None`` if it was final already (only one caller
        stops it). Its pending recipients stay pending and are never sent to.
        """

        async def stop(connection: AsyncConnection) -> Broadcast | None:
            if await broadcasts.fail(connection, broadcast_id, reason, now=_now()):
                return await broadcasts.fetch(connection, broadcast_id)
            return None

        return await self._write(stop)

    async def outcome_counts(self, broadcast_id: int) -> dict[DeliveryState, int]:
        """Recipients per final state (states no recipient has are absent)."""
        async with self._engine.connect() as connection:
            return await broadcasts.outcome_counts(connection, broadcast_id)

    async def variant_counts(self, broadcast_id: int) -> dict[str, dict[DeliveryState, int]]:
        """Per variant name: recipients per final state."""
        async with self._engine.connect() as connection:
            return await variant_counts.read(connection, broadcast_id)

    async def count_errors(self, broadcast_id: int, state: DeliveryState, error: str) -> int:
        """Recipients of the broadcast that ended in ``state`` with exactly ``error``."""
        async with self._engine.connect() as connection:
            return await broadcasts.count_errors(connection, broadcast_id, state, error)

    # -- transactions ---------------------------------------------------------------------

    async def _write(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run ``work`` in a write transaction; run it again if the database aborted it."""
        dialect = self._engine.dialect.name
        attempt = 1
        while True:
            try:
                async with self._turn(), self._writer.begin() as connection:
                    return await work(connection)
            except DBAPIError as error:
                if attempt >= MAX_ATTEMPTS or not dialects.is_retryable(dialect, error):
                    raise
                logger.warning(
                    "transaction aborted by the database; running it again",
                    extra={"attempt": attempt, "error": type(error.orig).__name__},
                )
            await asyncio.sleep(random.uniform(0, 0.02 * 2**attempt))
            attempt += 1

    def _turn(self) -> contextlib.AbstractAsyncContextManager[object]:
        """This process's turn to write: in order on SQLite, at once elsewhere."""
        return self._write_turn if self._ordered_writes else _NO_TURN


_NO_TURN: contextlib.AbstractAsyncContextManager[object] = contextlib.nullcontext()
_actions = actions  # ``actions`` is also the name of get_broadcast's parameter


@contextlib.asynccontextmanager
async def _opened(
    cls: type[Store], url: str, options: ConnectionOptions | None
) -> AsyncIterator[Store]:
    store = cls(create_engine(url, options), options)
    try:
        async with background_checkpoints(store._engine):
            yield store
    finally:
        await store.close()


def _now() -> datetime:
    return datetime.now(UTC)
