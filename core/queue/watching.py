"""Following one broadcast's events: the watch half of :class:`~.jetstream.Queue`.

Each watch is an ephemeral, memory-stored JetStream consumer filtered on the broadcast's
subject, deleted when the watch ends (or by the server after a minute without pulls), and
re-created from the next unseen event whenever it is lost (a consumer dropped, a reconnect,
a cluster node gone): events come in stream order, each once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from tgbroadcast.core.domain.errors import QueueError
from tgbroadcast.core.queue.changes import ChangeNotices
from tgbroadcast.core.queue.names import QueueNames
from tgbroadcast.core.queue.payloads import Event, Idle, decode_event

logger = logging.getLogger(__name__)

_WATCH_INACTIVE_THRESHOLD = 60.0
_VERIFY_INTERVAL = 1.0  # at most one consumer check per second after empty fetches
WATCH_PATIENCE = 30.0
"""Seconds a watch keeps trying to (re)create its consumer before it gives up: long enough
for a JetStream cluster to elect a new leader after losing a node."""


@dataclass(frozen=True, slots=True)
class Sequenced:
    """An event with its sequence in the events stream (its position, for a resume)."""

    seq: int
    event: Event


class EventWatching(ChangeNotices):
    """Watching events, and the consumer bookkeeping the queue shares with it (and, as a
    :class:`~.changes.ChangeNotices`, the change notices)."""

    _nc: NatsClient
    _js: JetStreamContext
    _names: QueueNames
    _pull_subs: set[JetStreamContext.PullSubscription]

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

    async def events_end(self) -> int:
        """One past the events stream's last sequence now: a watch from it sees only the
        events published from now on (``from now``). ``QueueError`` if NATS did not answer."""
        try:
            info = await self._js.stream_info(self._names.events_stream)
        except (nats.errors.Error, TimeoutError) as exc:
            raise QueueError(f"cannot read the events stream's end: {exc!r}") from exc
        return int(info.state.last_seq or 0) + 1

    async def watch(
        self, broadcast_id: int, *, idle_after: float = 1.0, batch_size: int = 64
    ) -> AsyncGenerator[Event | Idle, None]:
        """Every event of the broadcast from the start of the stream, then live ones; as
        :meth:`watch_from` from the first, without the stream sequences."""
        async with aclosing(
            self.watch_from(broadcast_id, 1, idle_after=idle_after, batch_size=batch_size)
        ) as events:
            async for item in events:
                yield item if isinstance(item, Idle) else item.event

    async def watch_from(
        self,
        broadcast_id: int,
        start_seq: int,
        *,
        idle_after: float = 1.0,
        batch_size: int = 64,
    ) -> AsyncGenerator[Sequenced | Idle, None]:
        """Every event of the broadcast whose stream sequence is ``start_seq`` or more, then
        live ones, each with its sequence.

        Events come in stream order, each once. ``Idle()`` is yielded whenever nothing
        arrived for ``idle_after`` seconds. At most ``batch_size`` events are fetched ahead
        of the caller, however slowly it iterates.

        The server-side consumer is deleted when the generator is closed: iterate it inside
        ``contextlib.aclosing(queue.watch(...))`` so that happens on every exit path,
        cancellation included. If the process vanishes, the server drops the consumer after
        a minute without pulls. If it is dropped (or lost) while the caller is slow, it is
        re-created from the next unseen event: nothing is skipped or repeated. While it cannot
        be created (a JetStream cluster electing a new leader after losing a node), ``Idle()``
        is yielded and it is tried again, for up to :data:`WATCH_PATIENCE` seconds.
        """
        if idle_after <= 0:
            raise ValueError("idle_after must be positive")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if start_seq < 1:
            raise ValueError("start_seq must be at least 1")
        stream = self._names.events_stream
        subject = self._names.events_subject(broadcast_id)
        next_seq = start_seq
        consumer = ""
        sub: JetStreamContext.PullSubscription | None = None
        last_pull = verified_at = time.monotonic()
        failing_since: float | None = None
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
                    try:
                        sub = await self._open_watch(stream, subject, consumer, next_seq)
                    except QueueError as exc:
                        # A cluster electing a leader, a reconnect: idle, then try again.
                        if failing_since is None:
                            failing_since = now
                        if now - failing_since > WATCH_PATIENCE:
                            raise
                        logger.info("watch of %s: %s; trying again", subject, exc)
                        yield Idle()
                        await asyncio.sleep(min(idle_after, 0.5))
                        continue
                    failing_since = None
                msgs: list[Msg] = []
                try:
                    msgs = await sub.fetch(batch=batch_size, timeout=idle_after)
                except TimeoutError:
                    pass
                except nats.errors.Error as exc:
                    # Newer servers answer a pull on a deleted consumer with 503; a lost
                    # connection or a node gone from a cluster: the same remedy.
                    logger.info("watch of %s: %r; re-creating its consumer", subject, exc)
                    await self._close_watch(stream, consumer, sub)
                    sub = None
                    yield Idle()  # not at once: a failing cluster would answer at once again
                    await asyncio.sleep(min(idle_after, 0.5))
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
                    yield Sequenced(seq, event)
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
            sub = await self._js.pull_subscribe_bind(consumer=consumer, stream=stream)
        except (nats.errors.Error, TimeoutError) as exc:
            raise QueueError(f"cannot watch {subject}: {exc!r}") from exc
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
