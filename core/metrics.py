"""Prometheus metrics: one registry per process, passed explicitly to what records into it.

Served at ``/metrics`` on the HTTP port by ``tgbroadcast run`` and ``server``; a standalone
``tgbroadcast worker`` serves its own on ``worker.metrics_port`` (0: not served). Names are
in base units (seconds, bytes); counters end in ``_total``. The table with the processes
that serve each name is in docs/operations.md ("Metrics").

Sending (the processes that run a worker), each labelled with the ``bot`` that sends (its
name, as requests and logs give it):

* ``tgb_messages_total{outcome,bot}`` — recipients that reached a final outcome (``sent``,
  ``blocked``, ``failed``, ...), counted by the worker that recorded them.
* ``tgb_telegram_429_total{bot}`` — 429 answers received (each pauses that bot everywhere).
* ``tgb_send_retries_total{bot}`` — attempts repeated after a transient failure.
* ``tgb_send_seconds{bot}`` — Bot API call latency (histogram).
* ``tgb_rate_permits_total{tier,bot}`` — send permits granted by the bot's shared rate budget.
* ``tgb_rate_limit_per_second{tier,bot}`` — the bot's configured limit (its ``rate_limit``,
  ``paid_rate_limit``), to plot ``rate(tgb_rate_permits_total[1m])`` against.

The API (``run`` and ``server``):

* ``tgb_broadcasts_created_total{bot}`` / ``tgb_recipients_accepted_total{bot}`` — intake,
  per bot.
* ``tgb_http_requests_total{route,method,status}`` — HTTP requests by route template
  (``/v1/broadcasts/{broadcast_id}``; ``unmatched`` when no route matched), method and
  status; ``tgb_http_request_duration_seconds{route,method}`` — their latency (histogram;
  an event stream counts until it ends).
* ``tgb_grpc_requests_total{method,code}`` — gRPC calls by short method name
  (``SendMessage``; ``unknown`` for a method the server does not have) and status code name
  (``OK``, ``INVALID_ARGUMENT``); ``tgb_grpc_request_duration_seconds{method}`` — their
  latency (histogram; a stream counts until it ends).
* ``tgb_watchers{transport}`` — open watch streams: ``grpc`` (``WatchBroadcast``) and
  ``sse`` (the REST event stream).
* ``tgb_webhook_deliveries_total{outcome,bot}`` — completion webhook attempts: ``delivered``,
  ``retried`` (failed, tried again later), ``failed`` (given up).

Every process:

* ``tgb_queue_pending_jobs`` — jobs in the work queue not yet acknowledged, and
  ``tgb_queue_backlog_jobs{tier,bot}`` — jobs waiting for a worker per tier and bot (both
  read at scrape time; NaN when NATS does not answer; a bot's series goes when it has
  neither jobs nor consumers: a deleted bot's are purged).
* ``tgb_database_errors_total`` — errors the database raised (lost connections, timeouts,
  deadlocks, ...), not the constraint violations the store answers itself.
* ``tgb_nats_errors_total`` — errors the NATS connection reported.
* ``process_*`` and ``python_*`` — prometheus_client's process, platform and garbage
  collector collectors (CPU seconds, resident memory, open files, GC runs, version).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Final, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
API_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds: an API call answers in milliseconds; a watch stream lands in ``+Inf``."""
TIERS: Final = ("free", "paid")
DEFAULT_BOT: Final = "default"
"""The bot ``telegram.token`` is (``tgbroadcast.core.domain.access.DEFAULT_BOT``)."""
TRANSPORTS: Final = ("grpc", "sse")
WEBHOOK_OUTCOMES: Final = ("delivered", "retried", "failed")
QUEUE_READ_TIMEOUT: Final = 2.0
"""Seconds a scrape waits for each of the queue's gauges: NaN after that (NATS is down), so
``/metrics`` answers well within Prometheus's scrape timeout."""


class QueueGauges(Protocol):
    """What the metrics read from the queue (:class:`tgbroadcast.core.queue.Queue`)."""

    async def pending_jobs(self) -> int: ...

    async def backlog_by_bot(self) -> dict[str, dict[str, int]]: ...

    @property
    def error_count(self) -> int: ...


class Metrics:
    """The service's metrics in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # What prometheus_client's default registry holds, in ours.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self._sending()
        self._api()
        self.queue_pending = Gauge(
            "tgb_queue_pending_jobs",
            "Jobs waiting in the work queue (read when scraped).",
            registry=self.registry,
        )
        self.queue_backlog = Gauge(
            "tgb_queue_backlog_jobs",
            "Jobs waiting for a worker, per tier and bot (read when scraped).",
            ["tier", "bot"],
            registry=self.registry,
        )
        self.database_errors = Counter(
            "tgb_database_errors",
            "Errors the database raised (not constraint violations the store answers).",
            registry=self.registry,
        )
        self._queues: list[QueueGauges] = []
        self._backlog_bots: set[str] = set()
        self.registry.register(
            _Total(
                "tgb_nats_errors",
                "Errors the NATS connection reported.",
                lambda: sum(queue.error_count for queue in self._queues),
            )
        )

    def _sending(self) -> None:
        self.messages = Counter(
            "tgb_messages",
            "Recipients that reached a final outcome, per bot.",
            ["outcome", "bot"],
            registry=self.registry,
        )
        self.recalls = Counter(
            "tgb_recalls",
            "Sent recipients whose recall reached an outcome (deleted, too_old, ...), per bot.",
            ["outcome", "bot"],
            registry=self.registry,
        )
        self.edits = Counter(
            "tgb_edits",
            "Sent recipients whose edit reached an outcome (edited, not_found, failed), per bot.",
            ["outcome", "bot"],
            registry=self.registry,
        )
        self.clicks = Counter(
            "tgb_clicks",
            "Tracked links opened: first (a recipient's first click on a link) or repeat, per bot.",
            ["kind", "bot"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "tgb_telegram_429",
            "429 answers received from Telegram, per bot.",
            ["bot"],
            registry=self.registry,
        )
        self.parked_until = Gauge(
            "tgb_parked_until_seconds",
            "While a long flood wait parks the bot's sending (worker.park_after): the Unix time "
            "it resumes; 0 otherwise. Per bot, as this process knows it.",
            ["bot"],
            registry=self.registry,
        )
        self.retries = Counter(
            "tgb_send_retries",
            "Sends repeated after a transient failure, per bot.",
            ["bot"],
            registry=self.registry,
        )
        self.send_seconds = Histogram(
            "tgb_send_seconds",
            "Bot API call latency, per bot.",
            ["bot"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rate_limit = Gauge(
            "tgb_rate_limit_per_second",
            "The configured send rate limit per tier and bot (rate_limit, paid_rate_limit).",
            ["tier", "bot"],
            registry=self.registry,
        )
        self._permits = _Permits()
        self.registry.register(self._permits)

    def _api(self) -> None:
        self.broadcasts_created = Counter(
            "tgb_broadcasts_created",
            "Broadcasts accepted, per bot.",
            ["bot"],
            registry=self.registry,
        )
        self.recipients_accepted = Counter(
            "tgb_recipients_accepted",
            "Recipients of accepted broadcasts, per bot.",
            ["bot"],
            registry=self.registry,
        )
        self.http_requests = Counter(
            "tgb_http_requests",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.http_seconds = Histogram(
            "tgb_http_request_duration_seconds",
            "HTTP request latency by route template and method.",
            ["route", "method"],
            buckets=API_BUCKETS,
            registry=self.registry,
        )
        self.grpc_requests = Counter(
            "tgb_grpc_requests",
            "gRPC calls by method and status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self.grpc_seconds = Histogram(
            "tgb_grpc_request_duration_seconds",
            "gRPC call latency by method (a stream: until it ends).",
            ["method"],
            buckets=API_BUCKETS,
            registry=self.registry,
        )
        self.watchers = Gauge(
            "tgb_watchers",
            "Open watch streams by transport.",
            ["transport"],
            registry=self.registry,
        )
        self.webhook_deliveries = Counter(
            "tgb_webhook_deliveries",
            "Completion webhook attempts by outcome, per bot.",
            ["outcome", "bot"],
            registry=self.registry,
        )
        for outcome in WEBHOOK_OUTCOMES:
            self.webhook_deliveries.labels(outcome=outcome, bot=DEFAULT_BOT)

    def broadcast_created(self, *, bot: str, recipients: int) -> None:
        """A broadcast of ``bot`` to ``recipients`` recipients was accepted."""
        self.broadcasts_created.labels(bot=bot).inc()
        self.recipients_accepted.labels(bot=bot).inc(recipients)

    def add_bot(self, bot: str) -> None:
        """Show the send-path series of ``bot`` (at zero) before its first send."""
        self.rate_limited.labels(bot=bot)
        self.retries.labels(bot=bot)
        self.send_seconds.labels(bot=bot)

    def add_permit_source(
        self, source: Callable[[], tuple[int, int]], *, bot: str = DEFAULT_BOT
    ) -> Callable[[], None]:
        """``source()`` returns (free, paid) permits granted so far by one rate limiter of
        ``bot``; call what this returns when that limiter closes: its last counts stay in the
        totals (a counter never goes down)."""
        return self._permits.add(bot, source)

    def set_rate_limits(self, *, free: float, paid: float, bot: str = DEFAULT_BOT) -> None:
        """The configured limits of ``bot``, in a process that sends (messages per second)."""
        self.rate_limit.labels(tier="free", bot=bot).set(free)
        self.rate_limit.labels(tier="paid", bot=bot).set(paid)

    def remove_rate_limits(self, bot: str) -> None:
        """``bot`` no longer sends from this process (it was deleted)."""
        for tier in TIERS:
            with contextlib.suppress(KeyError):
                self.rate_limit.remove(tier, bot)

    def add_queue(self, queue: QueueGauges) -> None:
        """Read the backlog and NATS errors of ``queue`` (the process's connection)."""
        self._queues.append(queue)

    def add_watcher_source(self, transport: str, source: Callable[[], int]) -> None:
        """``source()`` is the number of open ``transport`` watch streams (read when scraped)."""
        self.watchers.labels(transport=transport).set_function(source)

    def observe_http(self, *, route: str, method: str, status: int, seconds: float) -> None:
        self.http_requests.labels(route=route, method=method, status=str(status)).inc()
        self.http_seconds.labels(route=route, method=method).observe(seconds)

    def observe_grpc(self, *, method: str, code: str, seconds: float) -> None:
        self.grpc_requests.labels(method=method, code=code).inc()
        self.grpc_seconds.labels(method=method).observe(seconds)

    def database_error(self) -> None:
        self.database_errors.inc()

    def webhook_outcome(self, outcome: str, bot: str = DEFAULT_BOT) -> None:
        """One webhook attempt for a broadcast of ``bot`` ended ``delivered``, ``retried``
        or ``failed``."""
        self.webhook_deliveries.labels(outcome=outcome, bot=bot).inc()

    async def render(self, *, queue_depth: Callable[[], Awaitable[int]] | None = None) -> bytes:
        """The text exposition; the queue's gauges (``queue_depth``, or the pending jobs of
        the queue given to :meth:`add_queue`, and its backlog) are read first."""
        if queue_depth is None and self._queues:
            queue_depth = self._queues[0].pending_jobs
        if queue_depth is not None:
            try:
                async with asyncio.timeout(QUEUE_READ_TIMEOUT):
                    self.queue_pending.set(await queue_depth())
            except Exception:
                self.queue_pending.set(float("nan"))
        if self._queues:
            await self._read_backlog(self._queues[0])
        return generate_latest(self.registry)

    async def _read_backlog(self, queue: QueueGauges) -> None:
        try:
            async with asyncio.timeout(QUEUE_READ_TIMEOUT):
                backlog = await queue.backlog_by_bot()
        except Exception:  # every series known so far reads NaN
            backlog = {bot: {} for bot in self._backlog_bots | {DEFAULT_BOT}}
        for bot in self._backlog_bots - backlog.keys():  # gone: no jobs, no consumers
            for tier in TIERS:
                with contextlib.suppress(KeyError):
                    self.queue_backlog.remove(tier, bot)
        self._backlog_bots = set(backlog)
        for bot, tiers in backlog.items():
            for tier in TIERS:
                self.queue_backlog.labels(tier=tier, bot=bot).set(tiers.get(tier, float("nan")))


class _Permits(Collector):
    """Permits per tier and bot: the live limiters' counts plus those of closed ones."""

    def __init__(self) -> None:
        self._sources: list[tuple[str, Callable[[], tuple[int, int]]]] = []
        self._closed: dict[str, tuple[int, int]] = {}

    def add(self, bot: str, source: Callable[[], tuple[int, int]]) -> Callable[[], None]:
        entry = (bot, source)
        self._sources.append(entry)
        self._closed.setdefault(bot, (0, 0))

        def remove() -> None:
            if entry in self._sources:
                self._sources.remove(entry)
                free, paid = source()
                closed_free, closed_paid = self._closed[bot]
                self._closed[bot] = (closed_free + free, closed_paid + paid)

        return remove

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "tgb_rate_permits",
            "Send permits granted by the shared rate budget, per tier and bot.",
            labels=["tier", "bot"],
        )
        totals = dict(self._closed)
        for bot, source in self._sources:
            granted_free, granted_paid = source()
            free, paid = totals.get(bot, (0, 0))
            totals[bot] = (free + granted_free, paid + granted_paid)
        for bot, (free, paid) in sorted(totals.items()):
            family.add_metric(["free", bot], free)
            family.add_metric(["paid", bot], paid)
        yield family


class _Total(Collector):
    """A counter whose value is read from elsewhere when scraped."""

    def __init__(self, name: str, documentation: str, value: Callable[[], int]) -> None:
        self._name = name
        self._documentation = documentation
        self._value = value

    def collect(self) -> Iterable[Metric]:
        yield CounterMetricFamily(self._name, self._documentation, value=self._value())
