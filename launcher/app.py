"""Composition of the running service: backends, the API (gRPC + HTTP) and workers.

Start-up order: NATS (embedded when no URL is configured) → database (migrated) → queue →
dispatcher → scheduler → core → gRPC and HTTP listeners (→ worker). Shutdown
(:mod:`.shutdown`) runs it backwards: readiness fails and intake stops first (watch streams
told, requests in flight completed), workers finish the sends in hand, and NATS and the
database close last, all within ``server.shutdown_grace``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial

from aiohttp import web

from tgbroadcast.core.background.scheduler import Scheduler
from tgbroadcast.core.background.webhooks import WebhookNotifier
from tgbroadcast.core.bots.directory import BotDirectory
from tgbroadcast.core.bots.service import BotService
from tgbroadcast.core.config import Settings
from tgbroadcast.core.domain.errors import ConfigError
from tgbroadcast.core.health import Readiness
from tgbroadcast.core.metrics import Metrics
from tgbroadcast.core.queue import NatsAccess, Queue
from tgbroadcast.core.service.broadcasting import BroadcastingService
from tgbroadcast.core.service.clicks import ClickService
from tgbroadcast.core.service.dispatch import Dispatcher
from tgbroadcast.core.store import Store
from tgbroadcast.launcher.natsserver import EmbeddedNatsServer
from tgbroadcast.launcher.probes import probes_app, serving_probes
from tgbroadcast.launcher.shutdown import ApiDrain, ShutdownClock, ShutdownPlan
from tgbroadcast.server.auth import TokenCheck
from tgbroadcast.server.grpc.health import HealthFollower
from tgbroadcast.server.grpc.servicer import create_server
from tgbroadcast.server.guards import Guards
from tgbroadcast.server.rest.app import create_app
from tgbroadcast.server.rest.protocol import ApiRunner
from tgbroadcast.server.streams import Watchers
from tgbroadcast.server.tls import ServerCertificates

logger = logging.getLogger(__name__)

EMBEDDED_WAIT = 30.0
"""Seconds a worker without ``nats.url`` waits for the server's embedded nats-server."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Backends:
    store: Store
    queue: Queue
    metrics: Metrics
    bots: BotDirectory
    """Every bot, configured and stored (refreshed once at start)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunningApi:
    service: BroadcastingService
    dispatcher: Dispatcher
    http_port: int
    grpc_port: int
    drain: ApiDrain


@dataclass(frozen=True, slots=True, kw_only=True)
class RunningService:
    backends: Backends
    api: RunningApi | None
    readiness: Readiness
    clock: ShutdownClock

    async def drain(self) -> None:
        """The first steps of the shutdown (:mod:`.shutdown`): readiness fails, watch streams
        end, the API's listeners close once the requests in flight completed. The worker
        drains, and the backends close, when the context exits."""
        self.clock.start()
        self.readiness.start_draining()
        if self.api is not None:
            await self.api.drain()


@asynccontextmanager
async def open_backends(settings: Settings, *, embed_nats: bool) -> AsyncIterator[Backends]:
    """The database (migrated) and the queue.

    With no ``nats.url``: ``embed_nats`` starts a nats-server under ``data_dir`` and writes its
    URL for other processes on this machine; otherwise that URL file is read (a worker
    started beside ``tgbroadcast server``).
    """
    async with AsyncExitStack() as stack:
        url = settings.nats.url
        if not url and embed_nats:
            nats = await stack.enter_async_context(
                EmbeddedNatsServer(
                    store_dir=settings.data_dir / "nats", url_file=settings.nats_url_file
                )
            )
            url = nats.url
            logger.info("embedded nats-server started", extra={"url": url})
        elif not url:
            url = await _embedded_url(settings)
        store = await stack.enter_async_context(
            Store.open(settings.database.url, settings.database)
        )
        await store.migrate()
        bots = BotDirectory(settings, store)
        await bots.refresh()
        queue = await stack.enter_async_context(
            Queue.connect(
                url,
                prefix=settings.nats.prefix,
                ack_wait=settings.nats.ack_wait,
                replicas=settings.nats.replicas,
                access=_nats_access(settings),
            )
        )
        metrics = Metrics()
        store.on_error(metrics.database_error)
        metrics.add_queue(queue)
        yield Backends(store=store, queue=queue, metrics=metrics, bots=bots)


def _nats_access(settings: Settings) -> NatsAccess:
    nats = settings.nats
    return NatsAccess(
        creds_file=nats.creds_file,
        user=nats.user,
        password=nats.password,
        tls_ca_file=nats.tls_ca_file,
        tls_cert_file=nats.tls_cert_file,
        tls_key_file=nats.tls_key_file,
    )


async def _embedded_url(settings: Settings, *, wait: float = EMBEDDED_WAIT) -> str:
    """The URL of the embedded nats-server a `tgbroadcast server` runs under ``data_dir``,
    waiting up to ``wait`` seconds for one started at the same time."""
    path = settings.nats_url_file
    deadline = asyncio.get_running_loop().time() + wait
    while not path.exists():
        if asyncio.get_running_loop().time() > deadline:
            raise ConfigError(
                "nats.url",
                "is empty and no embedded nats-server is running under "
                f"{settings.data_dir}; start `tgbroadcast server` first or set nats.url",
            )
        await asyncio.sleep(0.2)
    return path.read_text(encoding="utf-8").strip()


@asynccontextmanager
async def running_api(
    settings: Settings,
    backends: Backends,
    *,
    readiness: Readiness | None = None,
    plan: ShutdownPlan | None = None,
) -> AsyncIterator[RunningApi]:
    """gRPC and HTTP listening on the configured ports (0: any free port); on exit they drain
    (:class:`ApiDrain`) as ``plan`` says (``server.shutdown_grace`` when omitted)."""
    readiness = readiness or Readiness.of(database=backends.store, nats=backends.queue)
    plan = plan or ShutdownPlan(settings.server.shutdown_grace)
    watchers = Watchers(settings.server.max_watchers)
    for transport in ("grpc", "sse"):
        backends.metrics.add_watcher_source(transport, partial(watchers.open_for, transport))
    tokens = TokenCheck(settings.require_api_tokens())
    guards = Guards.create(
        allowed_networks=settings.server.allowed_networks,
        trusted_proxies=settings.server.trusted_proxies,
        requests_per_second=settings.server.requests_per_second,
    )
    async with (
        Dispatcher(store=backends.store, queue=backends.queue) as dispatcher,
        Scheduler(store=backends.store, dispatcher=dispatcher, queue=backends.queue),
        _webhook_notifier(settings, backends) as notifier,
        HealthFollower(readiness) as health,
    ):
        service = BroadcastingService(
            store=backends.store,
            queue=backends.queue,
            dispatcher=dispatcher,
            metrics=backends.metrics,
            bots=backends.bots,
            max_user_ids=settings.server.max_user_ids,
            max_pending_recipients=settings.server.max_pending_recipients,
            accept_callbacks=notifier is not None,
            allow_private_callbacks=settings.webhook.allow_private_networks,
            on_finished=None if notifier is None else notifier.wake,
            public_url=settings.server.public_url,
        )
        click_service = ClickService(
            store=backends.store,
            queue=backends.queue,
            metrics=backends.metrics,
            retention_days=settings.tracking.retention_days,
        )
        bot_service = BotService(settings=settings, store=backends.store, directory=backends.bots)
        grpc_server = await create_server(
            service,
            tokens,
            guards=guards,
            health_servicer=health.servicer,
            watchers=watchers.for_transport("grpc"),
            observer=backends.metrics.observe_grpc,
            bot_service=bot_service,
        )
        certificates = _certificates(settings)
        grpc_address = f"{_bracketed(settings.server.host)}:{settings.server.grpc_port}"
        grpc_port = (
            grpc_server.add_insecure_port(grpc_address)
            if certificates is None
            else grpc_server.add_secure_port(grpc_address, certificates.grpc_credentials())
        )
        await grpc_server.start()
        drain: ApiDrain | None = None
        try:  # from here on, gRPC is serving: whatever fails below must stop it
            runner = ApiRunner(
                create_app(
                    service,
                    tokens,
                    max_body_bytes=settings.server.max_body_bytes,
                    sse_heartbeat=settings.server.sse_heartbeat,
                    guard=guards,
                    readiness=readiness,
                    watchers=watchers.for_transport("sse"),
                    observer=backends.metrics.observe_http,
                    bot_service=bot_service,
                    click_service=click_service,
                ),
                access_log=None,
                handle_signals=False,
                shutdown_timeout=plan.requests / 2,  # aiohttp may wait twice: see ShutdownPlan
            )
            drain = ApiDrain(
                plan=plan,
                readiness=readiness,
                health=health,
                watchers=watchers,
                grpc_server=grpc_server,
                runner=runner,
            )
            await runner.setup()
            site = web.TCPSite(
                runner,
                settings.server.host,
                settings.server.port,
                ssl_context=None if certificates is None else certificates.http_context(),
            )
            await site.start()
            http_port = int(runner.addresses[0][1])
            logger.info(
                "API listening",
                extra={
                    "host": settings.server.host,
                    "http_port": http_port,
                    "grpc_port": grpc_port,
                    "tls": certificates is not None,
                    "mtls": certificates is not None and certificates.mutual,
                },
            )
            yield RunningApi(
                service=service,
                dispatcher=dispatcher,
                http_port=http_port,
                grpc_port=grpc_port,
                drain=drain,
            )
        finally:
            if drain is None:  # failed before the HTTP runner existed
                await grpc_server.stop(0)
            else:
                await drain()


def _bracketed(host: str) -> str:
    """An IPv6 address in brackets, as gRPC's ``host:port`` needs it (``[::1]:50051``)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _certificates(settings: Settings) -> ServerCertificates | None:
    """TLS for both listeners when ``server.tls_cert_file`` and ``tls_key_file`` are set."""
    server = settings.server
    if server.tls_cert_file is None or server.tls_key_file is None:
        return None
    return ServerCertificates(server.tls_cert_file, server.tls_key_file, server.tls_client_ca_file)


@asynccontextmanager
async def _webhook_notifier(
    settings: Settings, backends: Backends
) -> AsyncIterator[WebhookNotifier | None]:
    """The completion webhook sender; none without ``webhook.secret`` (callbacks refused)."""
    if not settings.webhook.secret:
        yield None
        return
    async with WebhookNotifier(
        store=backends.store,
        settings=settings.webhook,
        on_outcome=backends.metrics.webhook_outcome,
    ) as notifier:
        yield notifier


@asynccontextmanager
async def running_service(
    settings: Settings, *, api: bool, workers: int
) -> AsyncIterator[RunningService]:
    """The whole service in this process: the API when ``api``, and ``workers`` workers.

    Call :meth:`RunningService.drain` before leaving to shut down in order (:mod:`.shutdown`).
    """
    plan = ShutdownPlan(settings.server.shutdown_grace)
    clock = ShutdownClock(plan)
    async with AsyncExitStack() as stack:
        backends = await stack.enter_async_context(open_backends(settings, embed_nats=api))
        readiness = Readiness.of(database=backends.store, nats=backends.queue)
        stack.push_async_callback(readiness.aclose)
        running: RunningApi | None = None
        if api:
            running = await stack.enter_async_context(
                running_api(settings, backends, readiness=readiness, plan=plan)
            )
        if workers:
            # aiogram takes seconds to import: only processes that send pay for it.
            from tgbroadcast.worker.runner import running_worker

            # Each bot's limits (a lane sets those of bots created later when it starts).
            for bot in backends.bots.all():
                backends.metrics.set_rate_limits(
                    free=bot.rate_limit, paid=bot.paid_rate_limit, bot=bot.name
                )

        if workers and running is None and settings.worker.metrics_port:
            probes = probes_app(readiness, backends.metrics)
            await stack.enter_async_context(
                serving_probes(probes, host=settings.server.host, port=settings.worker.metrics_port)
            )
        for _ in range(workers):
            await stack.enter_async_context(
                running_worker(
                    settings,
                    store=backends.store,
                    queue=backends.queue,
                    metrics=backends.metrics,
                    bots=backends.bots,
                    drain_within=clock.worker_budget,
                )
            )
        yield RunningService(backends=backends, api=running, readiness=readiness, clock=clock)
