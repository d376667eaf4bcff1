"""Prometheus metrics: one registry per process, passed explicitly to what records into it.

Served at ``/metrics`` on the HTTP port by ``tgbroadcast run`` and ``server``; a standalone
``tgbroadcast worker`` serves its own on ``worker.metrics_port`` (0: not served). Names:

* ``tgb_messages_total{outcome}`` — recipients that reached a final outcome (``sent``,
  ``blocked``, ``failed``, ...), counted by the worker that recorded them.
* ``tgb_telegram_429_total`` — 429 answers received (each pauses the bot everywhere).
* ``tgb_send_retries_total`` — attempts repeated after a transient failure.
* ``tgb_send_seconds`` — Bot API call latency (histogram).
* ``tgb_rate_permits_total{tier}`` — send permits granted by the shared rate budget.
* ``tgb_queue_pending_jobs`` — jobs waiting in the work queue (read at scrape time).
* ``tgb_broadcasts_created_total`` / ``tgb_recipients_accepted_total`` — intake.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The service's metrics in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.messages = Counter(
            "tgb_messages",
            "Recipients that reached a final outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "tgb_telegram_429", "429 answers received from Telegram.", registry=self.registry
        )
        self.retries = Counter(
            "tgb_send_retries",
            "Sends repeated after a transient failure.",
            registry=self.registry,
        )
        self.send_seconds = Histogram(
            "tgb_send_seconds",
            "Bot API call latency.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.broadcasts_created = Counter(
            "tgb_broadcasts_created", "Broadcasts accepted.", registry=self.registry
        )
        self.recipients_accepted = Counter(
            "tgb_recipients_accepted", "Recipients of accepted broadcasts.", registry=self.registry
        )
        self.queue_pending = Gauge(
            "tgb_queue_pending_jobs",
            "Jobs waiting in the work queue (read when scraped).",
            registry=self.registry,
        )
        self._permit_sources: list[Callable[[], tuple[int, int]]] = []
        self.registry.register(_Permits(self._permit_sources))

    def add_permit_source(self, source: Callable[[], tuple[int, int]]) -> None:
        """``source()`` returns (free, paid) permits granted so far by one rate limiter."""
        self._permit_sources.append(source)

    async def render(self, *, queue_depth: Callable[[], Awaitable[int]] | None = None) -> bytes:
        """The text exposition; ``queue_depth`` is read first when given."""
        if queue_depth is not None:
            try:
                self.queue_pending.set(await queue_depth())
            except Exception:
                self.queue_pending.set(float("nan"))
        return generate_latest(self.registry)


class _Permits(Collector):
    def __init__(self, sources: list[Callable[[], tuple[int, int]]]) -> None:
        self._sources = sources

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "tgb_rate_permits", "Send permits granted by the shared rate budget.", labels=["tier"]
        )
        free = paid = 0
        for source in self._sources:
            granted_free, granted_paid = source()
            free += granted_free
            paid += granted_paid
        family.add_metric(["free"], free)
        family.add_metric(["paid"], paid)
        yield family
