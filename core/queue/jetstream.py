"""The JetStream side of the queue: streams, the shared workers consumers, publishing, media.

The jobs consumers are per bot and tier (:mod:`.names`): the bot ``default``'s two are created
with the topology; another bot's when a worker first fetches its jobs, and removed with
:meth:`Queue.remove_bot_consumers` (which also purges a deleted bot's leftover jobs).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext, api
from nats.js.object_store import ObjectStore

import tgbroadcast.core.tracing as tracing
from tgbroadcast.core.domain.access import DEFAULT_BOT
from tgbroadcast.core.domain.errors import MediaGone, QueueError
from tgbroadcast.core.logs import redact_url
from tgbroadcast.core.queue.connection import NatsAccess, Repeats, split_servers
from tgbroadcast.core.queue.names import QueueNames
from tgbroadcast.core.queue.payloads import (
    Event,
    Job,
    encode_event,
)
from tgbroadcast.core.queue.received import ReceivedJob
from tgbroadcast.core.queue.replication import check_replicas, ensure_stream, raise_replicas
from tgbroadcast.core.queue.watching import EventWatching

logger = logging.getLogger(__name__)


DUPLICATE_WINDOW = 600.0
"""Seconds during which JetStream drops a re-publish with the same ``Nats-Msg-Id``."""
EVENTS_MAX_AGE = 7 * 24 * 3600.0
"""Seconds an event stays in the events stream."""
MEDIA_MAX_AGE = 7 * 24 * 3600.0
"""Seconds uploaded media is kept for the workers."""

_MSG_ID = "Nats-Msg-Id"
_MEDIA_RETRY_PAUSE = 0.1
"""Seconds between two tries of a media upload nobody answered (a stream between leaders)."""
_VERIFY_INTERVAL = 1.0  # at most one consumer check per second after empty fetches
_MAX_ACK_PENDING = 10_000
_CONSUMERS_PAGE = 256  # JetStream's consumer list answers at most this many at a time

_Lane = tuple[str, bool]
"""A bot's name and a tier (``True``: paid): what one jobs consumer serves."""


class Queue(EventWatching):
    """A connection to NATS with the service's streams; create it with ``Queue.connect``."""

    def __init__(
        self,
        *,
        nc: NatsClient,
        names: QueueNames,
        ack_wait: float,
        publish_timeout: float,
        replicas: int = 1,
    ) -> None:
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream()
        self._names = names
        self._ack_wait = ack_wait
        self._replicas = check_replicas(replicas)
        self._publish_timeout = publish_timeout
        self._jobs_subs: dict[_Lane, JetStreamContext.PullSubscription] = {}
        """The pull subscription of each bot's and tier's consumer."""
        self._fetch_locks: dict[_Lane, asyncio.Lock] = {}
        self._media: ObjectStore | None = None
        self._workers_verified_at: dict[_Lane, float] = {}
        self._errors = 0
        # Every open pull subscription: unsubscribed before draining, because a drain waits
        # for their buffers to empty, and stale status messages of expired pulls never do.
        self._pull_subs: set[JetStreamContext.PullSubscription] = set()

    @property
    def names(self) -> QueueNames:
        return self._names

    @property
    def replicas(self) -> int:
        """``nats.replicas``: for the KV buckets other components create on this connection."""
        return self._replicas

    @property
    def jetstream(self) -> JetStreamContext:
        """The JetStream context of this connection, for other NATS-backed components
        (the rate limiter's KV bucket)."""
        return self._js

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        prefix: str = "tgb",
        name: str = "tgbroadcast",
        ack_wait: float = 60.0,
        publish_timeout: float = 10.0,
        replicas: int = 1,
        access: NatsAccess | None = None,
    ) -> AbstractAsyncContextManager[Queue]:
        """Connect, create or update the streams and the ``workers`` consumer; drain on exit.

        The first connection waits (retrying, with a warning per failed attempt) until the
        server is reachable; later disconnects are retried forever. Creating the topology
        is idempotent, so several processes may start at once; the last one to start sets
        the consumer's ``ack_wait``, so give every process the same value. ``url`` lists one
        server or a cluster's, comma-separated; every stream and the media bucket get
        ``replicas`` (:mod:`.replication`); ``access`` carries credentials and TLS
        (:mod:`.connection`).
        """
        names = QueueNames(prefix)
        if ack_wait <= 0:
            raise ValueError("ack_wait must be positive")
        check_replicas(replicas)
        return cls._connect(
            url,
            names=names,
            name=name,
            ack_wait=ack_wait,
            pt=publish_timeout,
            replicas=replicas,
            access=access or NatsAccess(),
        )

    @classmethod
    @asynccontextmanager
    async def _connect(
        cls,
        url: str,
        *,
        names: QueueNames,
        name: str,
        ack_wait: float,
        pt: float,
        replicas: int,
        access: NatsAccess,
    ) -> AsyncIterator[Queue]:
        servers = split_servers(url)
        safe_url = ",".join(redact_url(server) for server in servers)
        closing = False
        errors = [0]  # counted before the Queue exists (errors while connecting)
        queue: Queue | None = None

        repeats = Repeats()

        async def on_error(exc: Exception) -> None:
            errors[0] += 1
            if queue is not None:
                queue._errors += 1
            # nats-py reports every reconnect attempt (one a second while NATS is down): the
            # same error is written once a minute, with how often it came meanwhile.
            seen = repeats.seen(repr(exc), time.monotonic())
            if seen is not None:
                more = f" (and {seen} times more in the last minute)" if seen else ""
                logger.warning("NATS %s: %r%s", safe_url, exc, more)

        async def on_disconnected() -> None:
            if closing:
                logger.debug("NATS %s: disconnected", safe_url)
            else:
                logger.warning("NATS %s: disconnected; reconnecting", safe_url)

        async def on_reconnected() -> None:
            logger.info("NATS %s: reconnected", safe_url)

        async def on_closed() -> None:
            logger.debug("NATS %s: connection closed", safe_url)

        nc = await nats.connect(
            servers,
            **access.connect_options(),  # a file it cannot read: ConfigError naming its key
            name=name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            drain_timeout=5,
            error_cb=on_error,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
            closed_cb=on_closed,
        )
        queue = cls(nc=nc, names=names, ack_wait=ack_wait, publish_timeout=pt, replicas=replicas)
        queue._errors = errors[0]
        try:
            await queue._ensure_topology()
            logger.info("NATS %s: streams %s ready", safe_url, names.prefix)
            yield queue
        finally:
            closing = True
            await queue._unsubscribe_pulls()
            if nc.is_connected:
                try:
                    await nc.drain()
                except Exception as exc:  # drain may fail mid-reconnect; close anyway
                    logger.warning("NATS %s: drain failed: %r", safe_url, exc)
            if not nc.is_closed:
                try:
                    await nc.close()
                except (OSError, nats.errors.Error) as exc:  # the server went away first
                    logger.warning("NATS %s: close failed: %r", safe_url, exc)

    async def _ensure_topology(self) -> None:
        n = self._names
        await ensure_stream(
            self._js,
            api.StreamConfig(
                name=n.jobs_stream,
                subjects=n.jobs_stream_subjects,
                retention=api.RetentionPolicy.WORK_QUEUE,
                storage=api.StorageType.FILE,
                duplicate_window=DUPLICATE_WINDOW,
            ),
            self._replicas,
        )
        await ensure_stream(
            self._js,
            api.StreamConfig(
                name=n.events_stream,
                subjects=[n.events_wildcard],
                retention=api.RetentionPolicy.LIMITS,
                storage=api.StorageType.FILE,
                max_age=EVENTS_MAX_AGE,
                duplicate_window=DUPLICATE_WINDOW,
            ),
            self._replicas,
        )
        # One consumer per tier (their subjects do not overlap, as a work queue requires):
        # paid jobs never wait behind the free ones, nor free behind paid. Other bots' come
        # with their first fetch.
        for paid in (False, True):
            await self._ensure_consumer((DEFAULT_BOT, paid))
        for lane in list(self._jobs_subs):
            if lane[0] != DEFAULT_BOT:  # a bot's consumer served here: re-created too
                await self._ensure_consumer(lane)

    async def _ensure_consumer(self, lane: _Lane) -> JetStreamContext.PullSubscription:
        """Create (or bring to this process's ``ack_wait``) the consumer of one bot's tier,
        and bind to it once."""
        bot, paid = lane
        consumer, subject = self._names.jobs_consumer(paid=paid, bot=bot)
        config = api.ConsumerConfig(
            durable_name=consumer,
            name=consumer,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self._ack_wait,
            max_ack_pending=_MAX_ACK_PENDING,
            max_deliver=-1,
            filter_subject=subject,
        )
        stream = self._names.jobs_stream
        try:
            await self._js.add_consumer(stream, config=config)
        except nats.js.errors.APIError as exc:
            raise QueueError(f"cannot create consumer {consumer}: {exc}") from exc
        sub = self._jobs_subs.get(lane)
        if sub is None:
            sub = await self._js.pull_subscribe_bind(consumer=consumer, stream=stream)
            self._jobs_subs[lane] = sub
            self._pull_subs.add(sub)
        self._workers_verified_at[lane] = time.monotonic()
        return sub

    async def _unsubscribe_pulls(self) -> None:
        for sub in list(self._pull_subs):
            await self._unsubscribe(sub)

    async def put_media(self, name: str, data: bytes) -> None:
        """Keep uploaded media for the workers (in a JetStream object store, 7 days)."""
        store = await self._media_store()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._publish_timeout
        while True:
            try:
                await store.put(name, data)
                return
            except (nats.errors.Error, TimeoutError) as exc:
                # In a cluster the store's stream can be between leaders (a node lost, its
                # replicas just raised) or its subjects not yet known to this server: nobody
                # answers for a moment — on the info request, on a chunk, or on the purge
                # nats-py makes after a failed chunk. The put is repeated (same name: the same
                # object), until the publish timeout.
                if not _nobody_answered(exc) or loop.time() >= deadline:
                    raise QueueError(f"storing media {name} failed: {exc!r}") from exc
                await asyncio.sleep(_MEDIA_RETRY_PAUSE)

    async def get_media(self, name: str) -> bytes:
        """Media stored by :meth:`put_media`; ``MediaGone`` if it is gone for good,
        ``QueueError`` if NATS did not answer."""
        store = await self._media_store()
        try:
            result = await store.get(name)
        except (nats.js.errors.ObjectNotFoundError, nats.js.errors.ObjectDeletedError):
            raise MediaGone(f"uploaded media {name} is no longer kept") from None
        except (nats.errors.Error, TimeoutError) as exc:
            raise QueueError(f"reading media {name} failed: {exc!r}") from exc
        return bytes(result.data or b"")

    async def _media_store(self) -> ObjectStore:
        if self._media is None:
            config = api.ObjectStoreConfig(
                description="tgbroadcast: media uploaded through the API",
                ttl=MEDIA_MAX_AGE,
                storage=api.StorageType.FILE,
                replicas=self._replicas,
            )
            bucket = self._names.media_bucket
            try:
                self._media = await self._js.create_object_store(bucket, config=config)
            except nats.js.errors.APIError:  # exists already (maybe another configuration)
                await raise_replicas(
                    self._js, f"OBJ_{bucket}", self._replicas, what=f"object store {bucket}"
                )
                self._media = await self._js.object_store(bucket)
        return self._media

    async def ping(self) -> None:
        """Returns once NATS and JetStream answered (the account's JetStream info), for
        readiness; ``QueueError`` while disconnected or when JetStream refuses."""
        if not self._nc.is_connected:
            raise QueueError("not connected to NATS")
        try:
            await self._js.account_info()
        except (nats.errors.Error, TimeoutError) as exc:
            raise QueueError(f"JetStream did not answer: {exc!r}") from exc

    async def pending_jobs(self) -> int:
        """Jobs in the work queue not yet acknowledged (waiting or in a worker's hands)."""
        info = await self._js.stream_info(self._names.jobs_stream)
        return int(info.state.messages)

    async def backlog(self) -> dict[str, int]:
        """Jobs waiting for a worker, per tier (``free``, ``paid``), summed over every bot
        (see :meth:`backlog_by_bot`)."""
        counts = {"free": 0, "paid": 0}
        for tiers in (await self.backlog_by_bot()).values():
            for tier, count in tiers.items():
                counts[tier] += count
        return counts

    async def backlog_by_bot(self) -> dict[str, dict[str, int]]:
        """Jobs waiting for a worker, per bot and tier (``free``, ``paid``): a consumer's
        pending count (not counting jobs already in a worker's hands), or for a bot whose
        consumer no worker created yet, the jobs on its subject. ``default`` is always
        there; another bot once it has jobs or a consumer."""
        names = self._names
        stream = names.jobs_stream
        counts: dict[str, dict[str, int]] = {DEFAULT_BOT: {"free": 0, "paid": 0}}
        served: set[_Lane] = set()
        async for lane, info in self._jobs_consumers():
            served.add(lane)
            tiers = counts.setdefault(lane[0], {"free": 0, "paid": 0})
            tiers["paid" if lane[1] else "free"] += int(info.num_pending or 0)
        state = (await self._js.stream_info(stream, subjects_filter=">")).state
        for subject, messages in (state.subjects or {}).items():
            owner = names.subject_owner(subject)
            if owner is not None and owner not in served:
                tiers = counts.setdefault(owner[0], {"free": 0, "paid": 0})
                tiers["paid" if owner[1] else "free"] += int(messages)
        return counts

    async def _jobs_consumers(self) -> AsyncIterator[tuple[_Lane, api.ConsumerInfo]]:
        """Every workers' consumer of the jobs stream, with the bot and tier it serves."""
        offset = 0
        while True:
            page = await self._js.consumers_info(self._names.jobs_stream, offset=offset)
            for info in page:
                lane = self._names.consumer_owner(info.name or "")
                if lane is not None:
                    yield lane, info
            if len(page) < _CONSUMERS_PAGE:
                return
            offset += len(page)

    async def jobs_mark(self) -> int:
        """One past the jobs stream's last sequence: a purge before it
        (:meth:`remove_bot_consumers`) keeps every job published afterwards."""
        state = (await self._js.stream_info(self._names.jobs_stream)).state
        return int(state.last_seq or 0) + 1

    async def remove_bot_consumers(self, bot: str, *, jobs_before: int = 0) -> None:
        """Delete the consumers of ``bot`` (a bot other than ``default``), for a bot that
        was deleted. Without ``jobs_before`` its jobs still in the stream stay there: a
        consumer created later (a worker that still serves it) takes them from the start.
        With a :meth:`jobs_mark` read before the bot was known to be deleted, its jobs
        published before that mark are purged (a deleted bot has no unfinished broadcast:
        they are jobs of cancelled broadcasts nobody would take), and only those: the jobs
        of the same bot created again after the mark stay."""
        if bot == DEFAULT_BOT:
            raise ValueError("the consumers of the bot default are never removed")
        for paid in (False, True):
            lane = (bot, paid)
            async with self._fetch_lock(lane):
                sub = self._jobs_subs.pop(lane, None)
                if sub is not None:
                    await self._unsubscribe(sub)
                self._workers_verified_at.pop(lane, None)
                consumer, subject = self._names.jobs_consumer(paid=paid, bot=bot)
                stream = self._names.jobs_stream
                try:
                    await self._js.delete_consumer(stream, consumer)
                except nats.js.errors.NotFoundError:
                    pass
                except (nats.errors.Error, TimeoutError) as exc:
                    raise QueueError(f"cannot delete consumer {consumer}: {exc!r}") from exc
                if jobs_before > 0:
                    try:
                        await self._js.purge_stream(stream, seq=jobs_before, subject=subject)
                    except (nats.errors.Error, TimeoutError) as exc:
                        raise QueueError(f"cannot purge the jobs of {subject}: {exc!r}") from exc

    @property
    def error_count(self) -> int:
        """Errors the NATS connection reported so far (its error callback)."""
        return self._errors

    async def _verify_workers_consumer(self, lane: _Lane) -> None:
        """Re-create the topology and the consumer if a bot's tier's consumer vanished
        (rate-limited)."""
        now = time.monotonic()
        if now - self._workers_verified_at.get(lane, 0.0) < _VERIFY_INTERVAL:
            return
        self._workers_verified_at[lane] = now
        consumer, _ = self._names.jobs_consumer(paid=lane[1], bot=lane[0])
        if not await self._consumer_exists(self._names.jobs_stream, consumer):
            logger.warning("consumer %s vanished; re-creating it", consumer)
            await self._recreate(lane)

    async def _recreate(self, lane: _Lane) -> None:
        await self._ensure_topology()  # the streams, and every consumer bound here
        if lane not in self._jobs_subs:
            await self._ensure_consumer(lane)

    def _fetch_lock(self, lane: _Lane) -> asyncio.Lock:
        lock = self._fetch_locks.get(lane)
        if lock is None:
            lock = self._fetch_locks[lane] = asyncio.Lock()
        return lock

    async def publish_jobs(self, jobs: Iterable[Job]) -> None:
        """Publish every job, pipelined; returns once JetStream stored (or deduplicated) all.

        Raises ``QueueError`` if any publish was not acknowledged within ``publish_timeout``;
        publishing the same jobs again is then safe (duplicates are dropped).
        """
        names = self._names
        await self._publish_all(
            [(names.jobs_subject_of(paid=job.paid, bot=job.bot), *job.encoded()) for job in jobs],
            names.jobs_stream,
        )

    async def publish_events(self, events: Sequence[Event]) -> None:
        """Publish every event, pipelined and in order; see ``publish_jobs`` for failures."""
        await self._publish_all(
            [
                (self._names.events_subject(e.broadcast_id), encode_event(e), e.msg_id)
                for e in events
            ],
            self._names.events_stream,
        )

    async def _publish_all(self, items: list[tuple[str, bytes, str]], stream: str) -> None:
        if not items:
            return
        futures: list[asyncio.Future[api.PubAck]] = []
        loop = asyncio.get_running_loop()
        trace = tracing.headers()  # the current trace (``traceparent``) for the consumers
        deadline = loop.time() + self._publish_timeout  # one deadline for the whole batch
        try:
            # No ``wait_stall``: on Python 3.11 nats-py's asyncio.wait_for around its stall
            # semaphore yields to the event loop on every message, so the client's flusher
            # wrote each message with a system call of its own.
            async with asyncio.timeout_at(deadline):
                for subject, payload, msg_id in items:
                    futures.append(
                        await self._js.publish_async(
                            subject, payload, stream=stream, headers={_MSG_ID: msg_id, **trace}
                        )
                    )
            _done, not_done = await asyncio.wait(futures, timeout=max(0.0, deadline - loop.time()))
        except (TimeoutError, nats.js.errors.TooManyStalledMsgsError):
            # (A deadline met inside nats-py's stall wait comes out as TooManyStalledMsgs.)
            raise QueueError(
                f"publishing to {stream} stalled: {len(futures)} of {len(items)} sent in "
                f"{self._publish_timeout:g} s"
            ) from None
        except nats.errors.Error as exc:
            raise QueueError(f"publishing to {stream} failed: {exc!r}") from exc
        finally:
            # Cancel what is still waiting and observe every exception (no "never retrieved").
            for future in futures:
                if not future.done():
                    future.cancel()
                elif not future.cancelled():
                    future.exception()
        failures: list[BaseException] = []
        for future in futures:
            if not future.cancelled() and (error := future.exception()) is not None:
                failures.append(error)
        if not_done or failures:
            raise QueueError(
                f"publishing to {stream}: {len(items) - len(not_done) - len(failures)} of "
                f"{len(items)} acknowledged, {len(not_done)} timed out, {len(failures)} failed"
                + (f" (first error: {failures[0]!r})" if failures else "")
            )
        duplicates = sum(1 for f in futures if f.result().duplicate)
        logger.debug("published %d to %s (%d duplicates)", len(items), stream, duplicates)

    async def fetch_jobs(
        self,
        *,
        max_jobs: int,
        timeout: float,  # noqa: ASYNC109 -- JetStream's pull expiry, not a cancel scope
        paid: bool = False,
        bot: str = DEFAULT_BOT,
    ) -> list[ReceivedJob]:
        """Up to ``max_jobs`` of ``bot``'s jobs of free broadcasts (with ``paid``: of paid
        ones) from that bot's tier's shared consumer, waiting at most ``timeout``.

        Returns ``[]`` when none arrived in time. Malformed messages are logged and
        terminated, never returned. Concurrent calls for one bot's tier on one ``Queue`` run
        one at a time. The consumer is created on the first call for a bot; if it vanished
        (deleted by an operator), it is re-created.
        """
        if max_jobs < 1:
            raise ValueError("max_jobs must be at least 1")
        lane = (bot, paid)
        async with self._fetch_lock(lane):
            sub = self._jobs_subs.get(lane) or await self._ensure_consumer(lane)
            try:
                msgs = await sub.fetch(batch=max_jobs, timeout=timeout)
            except TimeoutError:
                # Old servers answer a pull on a deleted consumer with silence.
                await self._verify_workers_consumer(lane)
                return []
            except nats.js.errors.APIError as exc:
                # Newer servers answer it with 503 (no responders).
                logger.warning("fetching jobs failed (%s); re-creating the consumer", exc)
                await self._recreate(lane)
                return []
        received: list[ReceivedJob] = []
        for msg in msgs:
            try:
                received.append(ReceivedJob(Job.decode(msg.data), msg))
            except ValueError as exc:
                logger.error(
                    "terminating malformed job (stream seq %d): %s; payload %r",
                    msg.metadata.sequence.stream,
                    exc,
                    msg.data[:200],
                )
                try:
                    await msg.term()
                except nats.errors.Error as term_exc:
                    logger.warning("could not terminate the malformed job: %r", term_exc)
        return received


def _nobody_answered(error: BaseException | None) -> bool:
    """Whether ``error`` (or what it was raised while handling) says no server answered."""
    while error is not None:
        if isinstance(
            error,
            nats.js.errors.NoStreamResponseError
            | nats.js.errors.ServiceUnavailableError
            | nats.errors.NoRespondersError,
        ):
            return True
        error = error.__context__
    return False
