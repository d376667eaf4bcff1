"""The NATS JetStream transport: jobs for the workers and per-recipient events for watchers.

SQL is the truth; this is only transport. Two streams per ``prefix``:

* ``<PREFIX>_JOBS`` — work-queue retention, subject ``<prefix>.jobs``. A job is a batch of
  recipient ids of one broadcast. All workers pull from ONE durable consumer (``workers``), so
  a job is delivered to one worker at a time; it leaves the stream when that worker acks it.
  A job that is not acked within ``ack_wait`` (worker crashed, or no ``in_progress()``) is
  delivered again, with a higher ``num_delivered``. Jobs are therefore delivered *at least
  once*: workers must skip recipients that are already final in SQL.
* ``<PREFIX>_EVENTS`` — limits retention (7 days), subjects ``<prefix>.events.<broadcast_id>``.
  One event per recipient outcome plus one when the broadcast finishes.

Every publish carries a ``Nats-Msg-Id`` derived from its content, so a re-publish within the
duplicate window (10 minutes) is dropped by the server: a job by broadcast id, first id, count
and a hash of the ids; a result by broadcast and user id; a finish by broadcast id.

Payloads are compact JSON, datetimes ISO 8601 in UTC. A malformed job is logged and
terminated (never redelivered); a malformed event is logged and skipped by watchers.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from broadcasting.errors import BroadcastingError
from broadcasting.model import BroadcastStatus, DeliveryResult, DeliveryState

logger = logging.getLogger(__name__)

__all__ = [
    "DUPLICATE_WINDOW",
    "EVENTS_MAX_AGE",
    "WORKERS_CONSUMER",
    "Event",
    "FinishedEvent",
    "Idle",
    "Job",
    "Queue",
    "QueueError",
    "QueueNames",
    "ReceivedJob",
    "ResultEvent",
]

DUPLICATE_WINDOW = 600.0
"""Seconds during which JetStream drops a re-publish with the same ``Nats-Msg-Id``."""
EVENTS_MAX_AGE = 7 * 24 * 3600.0
"""Seconds an event stays in the events stream."""
WORKERS_CONSUMER = "workers"
"""The durable pull consumer on the jobs stream shared by every worker."""

_MSG_ID = "Nats-Msg-Id"
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_STREAM_CONFIG_CONFLICT = 10058  # "stream name already in use with a different configuration"
_WATCH_INACTIVE_THRESHOLD = 60.0
_ACK_TIMEOUT = 5.0
_VERIFY_INTERVAL = 1.0  # at most one consumer check per second after empty fetches


class QueueError(BroadcastingError):
    """A NATS operation failed (publish not acknowledged, JetStream unavailable)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """A batch of recipients of one broadcast: ``user_ids`` ascending, distinct, non-empty."""

    broadcast_id: int
    user_ids: tuple[int, ...]

    def __post_init__(self) -> None:
        if not _is_int(self.broadcast_id) or self.broadcast_id < 1:
            raise ValueError(f"broadcast_id must be a positive int, got {self.broadcast_id!r}")
        if not self.user_ids:
            raise ValueError("a job needs at least one user id")
        if not all(_is_int(u) for u in self.user_ids):
            raise ValueError("user_ids must be ints")
        if any(a >= b for a, b in zip(self.user_ids, self.user_ids[1:], strict=False)):
            raise ValueError("user_ids must be ascending and distinct")

    @property
    def msg_id(self) -> str:
        """The ``Nats-Msg-Id``: the same for the same content, different for any other."""
        digest = hashlib.sha256(",".join(map(str, self.user_ids)).encode()).hexdigest()[:16]
        return f"j.{self.broadcast_id}.{self.user_ids[0]}.{len(self.user_ids)}.{digest}"

    def encode(self) -> bytes:
        return _dumps({"broadcast_id": self.broadcast_id, "user_ids": list(self.user_ids)})

    @classmethod
    def decode(cls, data: bytes) -> Job:
        """Parse a job message; ``ValueError`` when it is not one."""
        obj = _loads_object(data)
        user_ids = obj.get("user_ids")
        if not isinstance(user_ids, list):
            raise ValueError("user_ids must be a list")
        return cls(broadcast_id=_get_int(obj, "broadcast_id"), user_ids=tuple(user_ids))


@dataclass(frozen=True, slots=True, kw_only=True)
class ResultEvent:
    """One recipient reached its final state."""

    result: DeliveryResult

    @property
    def broadcast_id(self) -> int:
        return self.result.broadcast_id

    @property
    def msg_id(self) -> str:
        return f"r.{self.result.broadcast_id}.{self.result.user_id}"


@dataclass(frozen=True, slots=True, kw_only=True)
class FinishedEvent:
    """The broadcast reached a final status; no result events follow for it."""

    broadcast_id: int
    status: BroadcastStatus

    @property
    def msg_id(self) -> str:
        return f"f.{self.broadcast_id}"


Event = ResultEvent | FinishedEvent


@dataclass(frozen=True, slots=True)
class Idle:
    """Yielded by ``Queue.watch`` when nothing arrived for ``idle_after`` seconds."""


def encode_event(event: Event) -> bytes:
    if isinstance(event, ResultEvent):
        r = event.result
        if not r.state.is_final:
            raise ValueError("a result event needs a final delivery state")
        return _dumps(
            {
                "type": "result",
                "broadcast_id": r.broadcast_id,
                "user_id": r.user_id,
                "state": r.state.value,
                "finished_at": _format_datetime(r.finished_at),
                "message_id": r.message_id,
                "error": r.error,
            }
        )
    return _dumps(
        {"type": "finished", "broadcast_id": event.broadcast_id, "status": event.status.value}
    )


def decode_event(data: bytes) -> Event:
    """Parse an event message; ``ValueError`` when it is not one."""
    obj = _loads_object(data)
    kind = obj.get("type")
    broadcast_id = _get_int(obj, "broadcast_id")
    if kind == "finished":
        status = BroadcastStatus(_get_str(obj, "status"))
        if not status.is_final:
            raise ValueError(f"a finished event needs a final status, got {status.value}")
        return FinishedEvent(broadcast_id=broadcast_id, status=status)
    if kind != "result":
        raise ValueError(f"unknown event type {kind!r}")
    state = DeliveryState(_get_str(obj, "state"))
    if not state.is_final:
        raise ValueError("a result event needs a final delivery state")
    message_id = obj.get("message_id")
    error = obj.get("error")
    return ResultEvent(
        result=DeliveryResult(
            broadcast_id=broadcast_id,
            user_id=_get_int(obj, "user_id"),
            state=state,
            finished_at=_parse_datetime(_get_str(obj, "finished_at")),
            message_id=None if message_id is None else _get_int(obj, "message_id"),
            error=None if error is None else _get_str(obj, "error"),
        )
    )


@dataclass(frozen=True, slots=True)
class QueueNames:
    """The stream, subject and consumer names for one ``prefix``."""

    prefix: str

    def __post_init__(self) -> None:
        if not _PREFIX_RE.match(self.prefix):
            raise ValueError(f"prefix must match {_PREFIX_RE.pattern}, got {self.prefix!r}")

    @property
    def jobs_stream(self) -> str:
        return f"{self.prefix.upper()}_JOBS"

    @property
    def events_stream(self) -> str:
        return f"{self.prefix.upper()}_EVENTS"

    @property
    def jobs_subject(self) -> str:
        return f"{self.prefix}.jobs"

    @property
    def events_wildcard(self) -> str:
        return f"{self.prefix}.events.*"

    def events_subject(self, broadcast_id: int) -> str:
        return f"{self.prefix}.events.{broadcast_id}"


class ReceivedJob:
    """One fetched job message. Settle it exactly once: ``ack``, ``nak`` or ``term``.

    ``in_progress`` may be called any number of times before that, to restart AckWait while
    a long job runs; without it the job is redelivered to some worker after AckWait.
    """

    __slots__ = ("_msg", "job", "num_delivered")

    def __init__(self, job: Job, msg: Msg) -> None:
        self.job = job
        self.num_delivered: int = msg.metadata.num_delivered
        self._msg = msg

    def __repr__(self) -> str:
        return f"ReceivedJob(job={self.job!r}, num_delivered={self.num_delivered})"

    async def ack(self) -> None:
        """Done: returns once the server confirmed; the job then leaves the stream."""
        await self._settle("ack", self._msg.ack_sync(timeout=_ACK_TIMEOUT))

    async def nak(self, *, delay: float | None = None) -> None:
        """Not done: deliver again, after ``delay`` seconds when given."""
        await self._settle("nak", self._msg.nak(delay=delay))

    async def in_progress(self) -> None:
        """Still working: restart the AckWait timer."""
        await self._settle("in_progress", self._msg.in_progress())

    async def term(self) -> None:
        """Give up on this job for good: never delivered again."""
        await self._settle("term", self._msg.term())

    async def _settle(self, action: str, operation: Awaitable[object]) -> None:
        try:
            await operation
        except nats.errors.Error as exc:
            raise QueueError(f"{action} of job {self.job.msg_id} failed: {exc!r}") from exc


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
        self._jobs_sub: JetStreamContext.PullSubscription | None = None
        self._fetch_lock = asyncio.Lock()
        self._workers_verified_at = 0.0
        # Every open pull subscription: unsubscribed before draining, because a drain waits
        # for their buffers to empty, and stale status messages of expired pulls never do.
        self._pull_subs: set[JetStreamContext.PullSubscription] = set()

    @property
    def names(self) -> QueueNames:
        return self._names

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
        safe_url = _redact_url(url)
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
            url,
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
                await nc.close()

    async def _ensure_topology(self) -> None:
        n = self._names
        await self._ensure_stream(
            api.StreamConfig(
                name=n.jobs_stream,
                subjects=[n.jobs_subject],
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
        config = api.ConsumerConfig(
            durable_name=WORKERS_CONSUMER,
            name=WORKERS_CONSUMER,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self._ack_wait,
            max_ack_pending=10_000,
            max_deliver=-1,
            filter_subject=n.jobs_subject,
        )
        try:
            await self._js.add_consumer(n.jobs_stream, config=config)
        except nats.js.errors.APIError as exc:
            raise QueueError(f"cannot create consumer {WORKERS_CONSUMER}: {exc}") from exc
        self._workers_verified_at = time.monotonic()
        if self._jobs_sub is None:
            self._jobs_sub = await self._js.pull_subscribe_bind(
                consumer=WORKERS_CONSUMER, stream=n.jobs_stream
            )
            self._pull_subs.add(self._jobs_sub)

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

    async def _consumer_exists(self, stream: str, consumer: str) -> bool:
        """False only when the server says the consumer (or its stream) is gone."""
        try:
            await self._js.consumer_info(stream, consumer)
        except nats.js.errors.NotFoundError:
            return False
        except (nats.errors.Error, TimeoutError) as exc:
            logger.debug("cannot check consumer %s: %r", consumer, exc)
        return True

    async def _verify_workers_consumer(self) -> None:
        """Re-create the topology if the ``workers`` consumer vanished (rate-limited)."""
        now = time.monotonic()
        if now - self._workers_verified_at < _VERIFY_INTERVAL:
            return
        self._workers_verified_at = now
        if not await self._consumer_exists(self._names.jobs_stream, WORKERS_CONSUMER):
            logger.warning("consumer %s vanished; re-creating it", WORKERS_CONSUMER)
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
        subject = self._names.jobs_subject
        await self._publish_all(
            [(subject, job.encode(), job.msg_id) for job in jobs], self._names.jobs_stream
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
        try:
            for subject, payload, msg_id in items:
                futures.append(
                    await self._js.publish_async(
                        subject,
                        payload,
                        wait_stall=self._publish_timeout,
                        stream=stream,
                        headers={_MSG_ID: msg_id},
                    )
                )
            _done, not_done = await asyncio.wait(futures, timeout=self._publish_timeout)
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
    ) -> list[ReceivedJob]:
        """Up to ``max_jobs`` jobs from the shared consumer, waiting at most ``timeout``.

        Returns ``[]`` when none arrived in time. Malformed messages are logged and
        terminated, never returned. Concurrent calls on one ``Queue`` run one at a time.
        If the ``workers`` consumer vanished (deleted by an operator), it is re-created.
        """
        if max_jobs < 1:
            raise ValueError("max_jobs must be at least 1")
        async with self._fetch_lock:
            sub = self._jobs_sub
            assert sub is not None
            try:
                msgs = await sub.fetch(batch=max_jobs, timeout=timeout)
            except TimeoutError:
                # Old servers answer a pull on a deleted consumer with silence.
                await self._verify_workers_consumer()
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


def _dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _loads_object(data: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    return obj


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _get_int(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    if not _is_int(value):
        raise ValueError(f"{key} must be an int")
    assert isinstance(value, int)
    return value


def _get_str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    return value


def _format_datetime(value: datetime) -> str:
    """ISO 8601 in UTC; a naive datetime is taken to be UTC already."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


def _parse_datetime(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError("datetime without a time zone")
    return value.astimezone(UTC)


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
