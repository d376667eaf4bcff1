"""The JetStream side of the queue: streams, the shared workers consumer, publishing, watching."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.object_store import ObjectStore

from tgbroadcast.core.domain.errors import QueueError
from tgbroadcast.core.queue.names import QueueNames
from tgbroadcast.core.queue.payloads import (
    Event,
    Idle,
    Job,
    decode_event,
    encode_event,
)
from tgbroadcast.core.queue.received import ReceivedJob

logger = logging.getLogger(__name__)


DUPLICATE_WINDOW = 600.0
"""Seconds during which JetStream drops a re-publish with the same ``Nats-Msg-Id``."""
EVENTS_MAX_AGE = 7 * 24 * 3600.0
"""Seconds an event stays in the events stream."""
MEDIA_MAX_AGE = 7 * 24 * 3600.0
"""Seconds uploaded media is kept for the workers."""

_MSG_ID = "Nats-Msg-Id"
_STREAM_CONFIG_CONFLICT = 10058  # "stream name already in use with a different configuration"
_WATCH_INACTIVE_THRESHOLD = 60.0
_VERIFY_INTERVAL = 1.0  # at most one consumer check per second after empty fetches


class Queue:
    """A connection to NATS with the service's streams; create it with ``Queue.connect``."""

    def __init__(
        self,
        *,
        nc: NatsClient,
        names: QueueNames,
        ack_wait: float,
        publish_timeout: float,
    ) -> None:
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream()
        self._names = names
        self._ack_wait = ack_wait
        self._publish_timeout = publish_timeout
        self._jobs_subs: dict[bool, JetStreamContext.PullSubscription] = {}
        """The pull subscription of each tier's consumer (``True``: paid)."""
        self._fetch_locks = {False: asyncio.Lock(), True: asyncio.Lock()}
        self._media: ObjectStore | None = None
        self._workers_verified_at = 0.0
        # Every open pull subscription: unsubscribed before draining, because a drain waits
        # for their buffers to empty, and stale status messages of expired pulls never do.
        self._pull_subs: set[JetStreamContext.PullSubscription] = set()

    @property
    def names(self) -> QueueNames:
        return self._names

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
    ) -> AbstractAsyncContextManager[Queue]:
        """Connect, create or update the streams and the ``workers`` consumer; drain on exit.

        The first connection waits (retrying, with a warning per failed attempt) until the
        server is reachable; later disconnects are retried forever. Creating the topology
        is idempotent, so several processes may start at once; the last one to start sets
        the consumer's ``ack_wait``, so give every process the same value.
        """
        names = QueueNames(prefix)
        if ack_wait <= 0:
            raise ValueError("ack_wait must be positive")
        return cls._connect(url, names=names, name=name, ack_wait=ack_wait, pt=publish_timeout)

    @classmethod
    @asynccontextmanager
    async def _connect(
        cls, url: str, *, names: QueueNames, name: str, ack_wait: float, pt: float
    ) -> AsyncIterator[Queue]:
        # ``nats.url`` may list a cluster's servers, comma-separated; nats-py wants a list.
        servers = [server.strip() for server in url.split(",") if server.strip()]
        safe_url = ",".join(_redact_url(server) for server in servers)
        closing = False

        async def on_error(exc: Exception) -> None:
            logger.warning("NATS %s: %r", safe_url, exc)

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
            name=name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            drain_timeout=5,
            error_cb=on_error,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
            closed_cb=on_closed,
        )
        queue = cls(nc=nc, names=names, ack_wait=ack_wait, publish_timeout=pt)
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
        await self._ensure_stream(
            api.StreamConfig(
                name=n.jobs_stream,
                subjects=[n.jobs_subject, n.paid_jobs_subject],
                retention=api.RetentionPolicy.WORK_QUEUE,
                storage=api.StorageType.FILE,
                duplicate_window=DUPLICATE_WINDOW,
            )
        )
        await self._ensure_stream(
            api.StreamConfig(
                name=n.events_stream,
                subjects=[n.events_wildcard],
                retention=api.RetentionPolicy.LIMITS,
                storage=api.StorageType.FILE,
                max_age=EVENTS_MAX_AGE,
                duplicate_window=DUPLICATE_WINDOW,
            )
        )
        # One consumer per tier (their subjects do not overlap, as a work queue requires):
        # paid jobs never wait behind the free ones, nor free behind paid.
        for paid in (False, True):
            consumer, subject = n.jobs_consumer(paid=paid)
            config = api.ConsumerConfig(
                durable_name=consumer,
                name=consumer,
                deliver_policy=api.DeliverPolicy.ALL,
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=self._ack_wait,
                max_ack_pending=10_000,
                max_deliver=-1,
                filter_subject=subject,
            )
            try:
                await self._js.add_consumer(n.jobs_stream, config=config)
            except nats.js.errors.APIError as exc:
                raise QueueError(f"cannot create consumer {consumer}: {exc}") from exc
            if paid not in self._jobs_subs:
                sub = await self._js.pull_subscribe_bind(consumer=consumer, stream=n.jobs_stream)
                self._jobs_subs[paid] = sub
                self._pull_subs.add(sub)
        self._workers_verified_at = time.monotonic()

    async def _unsubscribe_pulls(self) -> None:
        for sub in list(self._pull_subs):
            await self._unsubscribe(sub)

    async def _unsubscribe(self, sub: JetStreamContext.PullSubscription) -> None:
        self._pull_subs.discard(sub)
        if self._nc.is_closed:
            return
        try:
            await sub.unsubscribe()
        except nats.errors.Error as exc:
            logger.debug("unsubscribe failed: %r", exc)

    async def put_media(self, name: str, data: bytes) -> None:
        """Keep uploaded media for the workers (in a JetStream object store, 7 days)."""
        store = await self._media_store()
        try:
            await store.put(name, data)
        except (nats.errors.Error, TimeoutError) as exc:
            raise QueueError(f"storing media {name} failed: {exc!r}") from exc

    async def get_media(self, name: str) -> bytes:
        """Media stored by :meth:`put_media`; ``QueueError`` if it is gone."""
        store = await self._media_store()
        try:
            result = await store.get(name)
        except (nats.errors.Error, TimeoutError) as exc:
            raise QueueError(f"reading media {name} failed: {exc!r}") from exc
        return bytes(result.data or b"")

    async def _media_store(self) -> ObjectStore:
        if self._media is None:
            config = api.ObjectStoreConfig(
                description="tgbroadcast: media uploaded through the API",
                ttl=MEDIA_MAX_AGE,
                storage=api.StorageType.FILE,
            )
            try:
                self._media = await self._js.create_object_store(
                    self._names.media_bucket, config=config
                )
            except nats.js.errors.APIError:  # exists already (maybe another configuration)
                self._media = await self._js.object_store(self._names.media_bucket)
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

    async def _consumer_exists(self, stream: str, consumer: str) -> bool:
        """False only when the server says the consumer (or its stream) is gone."""
        try:
            await self._js.consumer_info(stream, consumer)
        except nats.js.errors.NotFoundError:
            return False
        except (nats.errors.Error, TimeoutError) as exc:
            logger.debug("cannot check consumer %s: %r", consumer, exc)
        return True

    async def _verify_workers_consumer(self, *, paid: bool) -> None:
        """Re-create the topology if a tier's consumer vanished (rate-limited)."""
        now = time.monotonic()
        if now - self._workers_verified_at < _VERIFY_INTERVAL:
            return
        self._workers_verified_at = now
        consumer, _ = self._names.jobs_consumer(paid=paid)
        if not await self._consumer_exists(self._names.jobs_stream, consumer):
            logger.warning("consumer %s vanished; re-creating it", consumer)
            await self._ensure_topology()

    async def _ensure_stream(self, config: api.StreamConfig) -> None:
        try:
            await self._js.add_stream(config)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != _STREAM_CONFIG_CONFLICT:
                raise QueueError(f"cannot create stream {config.name}: {exc}") from exc
            try:
                await self._js.update_stream(config)
            except nats.js.errors.APIError as update_exc:
                raise QueueError(
                    f"stream {config.name} exists with an incompatible configuration: {update_exc}"
                ) from update_exc
            logger.info("updated the configuration of stream %s", config.name)
        except nats.js.errors.APIError as exc:
            raise QueueError(f"cannot create stream {config.name}: {exc}") from exc

    async def publish_jobs(self, jobs: Iterable[Job]) -> None:
        """Publish every job, pipelined; returns once JetStream stored (or deduplicated) all.

        Raises ``QueueError`` if any publish was not acknowledged within ``publish_timeout``;
        publishing the same jobs again is then safe (duplicates are dropped).
        """
        names = self._names
        await self._publish_all(
            [
                (
                    names.paid_jobs_subject if job.paid else names.jobs_subject,
                    job.encode(),
                    job.msg_id,
                )
                for job in jobs
            ],
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
        deadline = loop.time() + self._publish_timeout  # one deadline for the whole batch
        try:
            # No ``wait_stall``: on Python 3.11 nats-py's asyncio.wait_for around its stall
            # semaphore yields to the event loop on every message, so the client's flusher
            # wrote each message with a system call of its own.
            async with asyncio.timeout_at(deadline):
                for subject, payload, msg_id in items:
                    futures.append(
                        await self._js.publish_async(
                            subject, payload, stream=stream, headers={_MSG_ID: msg_id}
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
    ) -> list[ReceivedJob]:
        """Up to ``max_jobs`` jobs of free broadcasts (with ``paid``: of paid ones) from the
        tier's shared consumer, waiting at most ``timeout``.

        Returns ``[]`` when none arrived in time. Malformed messages are logged and
        terminated, never returned. Concurrent calls for one tier on one ``Queue`` run one
        at a time. If the consumer vanished (deleted by an operator), it is re-created.
        """
        if max_jobs < 1:
            raise ValueError("max_jobs must be at least 1")
        async with self._fetch_locks[paid]:
            sub = self._jobs_subs[paid]
            try:
                msgs = await sub.fetch(batch=max_jobs, timeout=timeout)
            except TimeoutError:
                # Old servers answer a pull on a deleted consumer with silence.
                await self._verify_workers_consumer(paid=paid)
                return []
            except nats.js.errors.APIError as exc:
                # Newer servers answer it with 503 (no responders).
                logger.warning("fetching jobs failed (%s); re-creating the consumer", exc)
                await self._ensure_topology()
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

    async def watch(
        self, broadcast_id: int, *, idle_after: float = 1.0, batch_size: int = 64
    ) -> AsyncGenerator[Event | Idle, None]:
        """Every event of the broadcast from the start of the stream, then live ones.

        Events come in stream order, each once. ``Idle()`` is yielded whenever nothing
        arrived for ``idle_after`` seconds. At most ``batch_size`` events are fetched ahead
        of the caller, however slowly it iterates.

        The server-side consumer is deleted when the generator is closed: iterate it inside
        ``contextlib.aclosing(queue.watch(...))`` so that happens on every exit path,
        cancellation included. If the process vanishes, the server drops the consumer after
        a minute without pulls. If it is dropped (or lost) while the caller is slow, it is
        re-created from the next unseen event: nothing is skipped or repeated.
        """
        if idle_after <= 0:
            raise ValueError("idle_after must be positive")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        stream = self._names.events_stream
        subject = self._names.events_subject(broadcast_id)
        next_seq = 1
        consumer = ""
        sub: JetStreamContext.PullSubscription | None = None
        last_pull = verified_at = time.monotonic()
        try:
            while True:
                now = time.monotonic()
                if sub is not None and now - last_pull > _WATCH_INACTIVE_THRESHOLD / 2:
                    # The caller was slow: the server may have dropped the idle consumer.
                    verified_at = now
                    if not await self._consumer_exists(stream, consumer):
                        await self._close_watch(stream, consumer, sub)
                        sub = None
                if sub is None:
                    consumer = f"watch-{broadcast_id}-{uuid.uuid4().hex[:16]}"
                    sub = await self._open_watch(stream, subject, consumer, next_seq)
                msgs: list[Msg] = []
                try:
                    msgs = await sub.fetch(batch=batch_size, timeout=idle_after)
                except TimeoutError:
                    pass
                except nats.js.errors.APIError as exc:
                    # Newer servers answer a pull on a deleted consumer with 503.
                    logger.info("watch of %s: %s; re-creating its consumer", subject, exc)
                    await self._close_watch(stream, consumer, sub)
                    sub = None
                    continue
                last_pull = now = time.monotonic()
                if not msgs:
                    # Old servers answer a pull on a deleted consumer with silence.
                    if now - verified_at >= _VERIFY_INTERVAL:
                        verified_at = now
                        if not await self._consumer_exists(stream, consumer):
                            logger.info("watch of %s lost its consumer; re-creating", subject)
                            await self._close_watch(stream, consumer, sub)
                            sub = None
                    yield Idle()
                    continue
                for msg in msgs:
                    seq = msg.metadata.sequence.stream
                    if seq < next_seq:
                        continue
                    next_seq = seq + 1
                    try:
                        event = decode_event(msg.data)
                    except ValueError as exc:
                        logger.error("skipping malformed event (stream seq %d): %s", seq, exc)
                        continue
                    yield event
        finally:
            if sub is not None:
                await self._close_watch(stream, consumer, sub)

    async def _open_watch(
        self, stream: str, subject: str, consumer: str, start_seq: int
    ) -> JetStreamContext.PullSubscription:
        config = api.ConsumerConfig(
            name=consumer,
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=start_seq,
            ack_policy=api.AckPolicy.NONE,
            filter_subject=subject,
            inactive_threshold=_WATCH_INACTIVE_THRESHOLD,
            mem_storage=True,
            num_replicas=1,
        )
        try:
            await self._js.add_consumer(stream, config=config)
        except nats.js.errors.APIError as exc:
            raise QueueError(f"cannot watch {subject}: {exc}") from exc
        sub = await self._js.pull_subscribe_bind(consumer=consumer, stream=stream)
        self._pull_subs.add(sub)
        return sub

    async def _close_watch(
        self, stream: str, consumer: str, sub: JetStreamContext.PullSubscription
    ) -> None:
        await self._unsubscribe(sub)
        if self._nc.is_closed or self._nc.is_draining:
            return
        try:
            await self._js.delete_consumer(stream, consumer)
        except nats.js.errors.NotFoundError:
            pass
        except (nats.errors.Error, TimeoutError) as exc:
            logger.warning("could not delete watch consumer %s: %r", consumer, exc)


def _redact_url(url: str) -> str:
    """The URL without user info (NATS URLs may carry a user, password or token)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
