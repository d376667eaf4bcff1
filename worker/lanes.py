"""Lanes: every bot sends on a lane of its own, so no bot waits for another.

A *lane* is one bot in one worker: its Telegram client (the bot's token and ``api_url``), its
rate budget (:class:`~tgbroadcast.worker.ratelimit.RateLimiter` on the bot's keys
``<bot_id>.free``, ``<bot_id>.paid``, ``<bot_id>.pause`` and chat keys ``<bot_id>.u<id>``, at
the bot's ``rate_limit`` and ``paid_rate_limit``, its chat pacing counting only the bot's own
sending broadcasts), its result recorder, its :class:`~tgbroadcast.worker.delivery.Deliverer`
with ``worker.concurrency`` (free) and ``worker.paid_concurrency`` (paid) send slots of its own,
and its :class:`~tgbroadcast.worker.worker.Worker` fetching only that bot's jobs from that bot's
consumers (:mod:`tgbroadcast.core.queue.names`).

Guarantees:

* **Isolation.** A bot's 429 pauses that bot's budget only (on every worker); the other lanes
  keep sending. A bot's budget, pause and chat pacing are shared by every worker process
  through NATS KV keys of that bot alone.
* **Fairness by construction.** Lanes share nothing that a backlog can fill: each has its own
  consumers (jobs of one bot never queue in front of another's), its own send slots and its
  own budget. A bot with a million recipients waiting holds at most its own slots and its own
  few jobs; another bot's first job is fetched by that bot's own fetch loop at once.
* **Bots come and go.** :class:`Lanes` reads the bots from a :class:`Bots` directory and
  refreshes it every :data:`BOT_REFRESH_INTERVAL` seconds: a new bot gets a lane, a changed
  one (token, limits, URL) a new lane, a deleted one's lane takes no new job, finishes the
  jobs in hand and stops (its consumers are then removed). A lane whose start fails (NATS
  unreachable) is started again at the next refresh. With no bot at all the worker waits
  for one, with one warning.
* **No consumer outlives its bot.** A lane cancelled before it could remove its consumers
  (a drain cut short), or a consumer re-created by a worker that had not yet seen the
  deletion, is removed by the sweep every worker runs at start and every
  :data:`SWEEP_INTERVAL` seconds: the consumers of every deleted bot (its tombstone) that
  this worker has no lane for, and its jobs left in the stream (a deleted bot has no
  unfinished broadcast: they are jobs of cancelled ones), so its backlog goes to zero.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Protocol

from tgbroadcast.core.config.settings import BotSettings, Settings, WorkerSettings
from tgbroadcast.core.domain.access import DEFAULT_BOT
from tgbroadcast.core.metrics import Metrics
from tgbroadcast.core.queue import Queue
from tgbroadcast.core.rules.paid import star_milli_per_message
from tgbroadcast.core.store import Store
from tgbroadcast.core.tasks import cancel_and_wait, wait_event
from tgbroadcast.worker.delivery import FOLLOW_UP_SLOTS, Deliverer
from tgbroadcast.worker.fetching import MediaFetcher
from tgbroadcast.worker.ratelimit import RateLimiter
from tgbroadcast.worker.recorder import ResultRecorder
from tgbroadcast.worker.telegram import TelegramSender
from tgbroadcast.worker.worker import Worker

logger = logging.getLogger(__name__)

BOT_REFRESH_INTERVAL = 5.0
"""Seconds between two refreshes of the bots: a bot created through the API is served
within about this, by every worker."""


SWEEP_INTERVAL = 60.0
"""Seconds between two sweeps of deleted bots' consumers."""


def gated_calls(settings: WorkerSettings) -> int:
    """The most calls of a lane that may wait at their rate slots at once (free and paid sends,
    recalls and edits): its Telegram session's connections, each holding one while it waits."""
    return (1 + FOLLOW_UP_SLOTS) * settings.concurrency + settings.paid_concurrency


class Bots(Protocol):
    """The bots to send with (:class:`tgbroadcast.core.bots.directory.BotDirectory`)."""

    def all(self) -> tuple[BotSettings, ...]: ...

    async def refresh(self) -> None: ...


@dataclass(eq=False, slots=True)
class _Lane:
    """A lane's task and how to stop it."""

    bot: BotSettings
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] = field(init=False)
    retired: bool = False
    """Its bot was deleted: its consumers go when it stops."""


class Lanes:
    """A lane per bot of ``bots``, kept in step with it until :meth:`stop`.

    Run :meth:`run` in a task; :meth:`stop` then :meth:`drain` finish the jobs in hand.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        store: Store,
        queue: Queue,
        metrics: Metrics,
        bots: Bots,
        refresh_interval: float = BOT_REFRESH_INTERVAL,
    ) -> None:
        self._settings = settings
        self._store = store
        self._queue = queue
        self._metrics = metrics
        self._bots = bots
        self._refresh_interval = refresh_interval
        self._lanes: dict[str, _Lane] = {}
        self._leaving: set[_Lane] = set()
        """Lanes told to stop (their bot deleted or changed) that have not finished yet."""
        self._stopping = asyncio.Event()
        self._warned_empty = False

    @property
    def bots(self) -> tuple[str, ...]:
        """The bots this worker has a lane for now."""
        return tuple(self._lanes)

    async def run(self) -> None:
        """Refresh the bots and follow them with lanes until :meth:`stop`."""
        swept_at = -math.inf
        while not self._stopping.is_set():
            try:
                await self._bots.refresh()
            except Exception as exc:  # the bots known so far keep their lanes
                logger.warning("refreshing the bots failed", extra={"error": repr(exc)})
            self._follow(self._bots.all())
            if time.monotonic() - swept_at >= SWEEP_INTERVAL:
                swept_at = time.monotonic()
                await self._sweep()
            await wait_event(self._stopping, self._refresh_interval)

    async def _sweep(self) -> None:
        """Remove the consumers and the leftover jobs of deleted bots this worker has no lane
        for (jobs published after the mark, read before the tombstones, stay: a bot created
        again may own them)."""
        try:
            mark = await self._queue.jobs_mark()
            deleted = set(await self._store.deleted_bot_names())
            if not deleted:
                return
            serving = {*self._lanes, *(lane.bot.name for lane in self._leaving), DEFAULT_BOT}
            present = set(await self._queue.backlog_by_bot())  # consumers or jobs
            for bot in sorted((present & deleted) - serving):
                await self._queue.remove_bot_consumers(bot, jobs_before=mark)
                logger.info("a deleted bot's consumers and jobs removed", extra={"bot": bot})
        except Exception as exc:  # tried again at the next sweep
            logger.warning("sweeping deleted bots' consumers failed", extra={"error": repr(exc)})

    def stop(self) -> None:
        """Take no new jobs on any lane and start no lane; :meth:`drain` waits for the jobs
        in hand."""
        self._stopping.set()
        for lane in [*self._lanes.values(), *self._leaving]:
            lane.stop.set()

    async def drain(self, within: float) -> None:
        """Wait up to ``within`` seconds for every lane to finish its jobs in hand; then
        cancel the rest (JetStream gives their jobs to other workers after AckWait)."""
        self.stop()
        lanes = [lane.task for lane in [*self._lanes.values(), *self._leaving]]
        if not lanes:
            return
        _, late = await asyncio.wait(lanes, timeout=max(0.0, within))
        if late:
            logger.warning("jobs in hand did not finish in time; left to other workers")
            await cancel_and_wait(*late)

    def _follow(self, bots: tuple[BotSettings, ...]) -> None:
        wanted = {bot.name: bot for bot in bots}
        for name, lane in list(self._lanes.items()):
            if lane.task.done():  # ended on its own (its start failed): started again below
                del self._lanes[name]
            elif wanted.get(name) != lane.bot:
                retired = name not in wanted
                logger.info(
                    "bot deleted: its lane finishes its jobs and stops"
                    if retired
                    else "bot changed: its lane restarts",
                    extra={"bot": name},
                )
                lane.retired = retired
                lane.stop.set()
                del self._lanes[name]
                self._leaving.add(lane)
        if self._stopping.is_set():
            return
        for name, bot in wanted.items():
            if name not in self._lanes:
                self._start(bot)
        if not wanted and not self._warned_empty:
            self._warned_empty = True
            logger.warning(
                "no bot to send with: waiting for one (telegram.token, bots: or POST /v1/bots)"
            )
        elif wanted:
            self._warned_empty = False

    def _start(self, bot: BotSettings) -> None:
        lane = _Lane(bot=bot)
        lane.task = asyncio.create_task(self._run_lane(lane), name=f"lane-{bot.name}")
        lane.task.add_done_callback(lambda _: self._leaving.discard(lane))
        self._lanes[bot.name] = lane

    async def _run_lane(self, lane: _Lane) -> None:
        bot = lane.bot
        try:
            await self._serve(lane)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.error(
                "the lane of a bot failed; it starts again at the next refresh",
                extra={"bot": bot.name, "error": repr(exc)},
            )
            return
        if lane.retired and bot.name not in self._lanes:
            self._metrics.remove_rate_limits(bot.name)
            if bot.name != DEFAULT_BOT:
                try:
                    await self._queue.remove_bot_consumers(bot.name)
                except Exception as exc:
                    logger.warning(
                        "removing a deleted bot's consumers failed",
                        extra={"bot": bot.name, "error": repr(exc)},
                    )

    async def _serve(self, lane: _Lane) -> None:
        """Everything the bot sends with, until the lane is told to stop; then its jobs in
        hand finish (the caller's :meth:`drain` bounds how long)."""
        bot, settings, store, queue = lane.bot, self._settings, self._store, self._queue
        metrics = self._metrics
        async with (
            TelegramSender(
                token=bot.token,
                api_url=bot.api_url,
                connections=gated_calls(settings.worker),
            ) as sender,
            RateLimiter(
                js=queue.jetstream,
                prefix=queue.names.prefix,
                bot_id=bot.bot_id,
                rate=bot.rate_limit,
                paid_rate=bot.paid_rate_limit,
                margin=settings.telegram.rate_margin,
                active_broadcasts=functools.partial(store.count_active_broadcasts, bot=bot.name),
                replicas=queue.replicas,
                park_after=settings.worker.park_after,
            ) as limiter,
            ResultRecorder(store=store, queue=queue, metrics=metrics, bot=bot.name) as recorder,
            MediaFetcher(allow_private=settings.webhook.allow_private_networks) as fetcher,
        ):
            metrics.add_bot(bot.name)
            metrics.set_rate_limits(free=bot.rate_limit, paid=bot.paid_rate_limit, bot=bot.name)
            forget_permits = metrics.add_permit_source(
                lambda: (limiter.stats.permits, limiter.stats.paid_permits), bot=bot.name
            )
            worker_settings = settings.worker
            deliverer = Deliverer(
                store=store,
                queue=queue,
                sender=sender,
                limiter=limiter,
                recorder=recorder,
                metrics=metrics,
                concurrency=worker_settings.concurrency,
                paid_concurrency=worker_settings.paid_concurrency,
                max_attempts=worker_settings.max_attempts,
                content_error_threshold=worker_settings.content_error_threshold,
                backoff_base=worker_settings.backoff_base,
                backoff_cap=worker_settings.backoff_cap,
                bot=bot.name,
                fetcher=fetcher,
                paid_star_milli=star_milli_per_message(bot.paid_rate_limit),
            )
            worker = Worker(
                store=store,
                queue=queue,
                deliverer=deliverer,
                max_jobs=max(
                    2, (worker_settings.concurrency + worker_settings.paid_concurrency) // 16
                ),
                lease=settings.nats.ack_wait,
                heartbeat_interval=settings.nats.ack_wait / 3,
                bot=bot.name,
            )
            task = asyncio.create_task(worker.run(), name=f"worker-{bot.name}")
            logger.info(
                "sending with a bot",
                extra={
                    "bot": bot.name,
                    "rate_limit": bot.rate_limit,
                    "paid_rate_limit": bot.paid_rate_limit,
                    "concurrency": worker_settings.concurrency,
                    "paid_concurrency": worker_settings.paid_concurrency,
                },
            )
            try:
                stopping = asyncio.create_task(lane.stop.wait())
                try:
                    await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stopping.cancel()
                worker.stop()
                await task  # the jobs in hand finish (or the lane is cancelled)
            finally:
                worker.stop()
                await cancel_and_wait(task)
                forget_permits()
                await deliverer.aclose()
                logger.info("stopped sending with a bot", extra={"bot": bot.name})
