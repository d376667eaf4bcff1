"""Composition of the running service: backends, the API (gRPC + HTTP) and workers.

Start-up order: NATS (embedded when no URL is configured) → database (migrated) → queue →
dispatcher → scheduler → core → gRPC and HTTP listeners (→ worker). Shutdown runs it
backwards, so intake stops first, workers finish the sends in hand, and NATS and the
database close last.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import start_http_server

from tgbroadcast.core.background.scheduler import Scheduler
from tgbroadcast.core.background.webhooks import WebhookNotifier
from tgbroadcast.core.config import Settings
from tgbroadcast.core.domain.errors import ConfigError
from tgbroadcast.core.metrics import Metrics
from tgbroadcast.core.queue import Queue
from tgbroadcast.core.service.broadcasting import BroadcastingService
from tgbroadcast.core.service.dispatch import Dispatcher
from tgbroadcast.core.store import Store
from tgbroadcast.launcher.natsserver import EmbeddedNatsServer
from tgbroadcast.server.auth import TokenCheck
from tgbroadcast.server.grpc.servicer import create_server
from tgbroadcast.server.rest.app import create_app

logger = logging.getLogger(__name__)

GRACE_SECONDS = 5.0
EMBEDDED_WAIT = 30.0
"""Seconds a worker without ``nats.url`` waits for the server's embedded nats-server."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Backends:
    store: Store
    queue: Queue
    metrics: Metrics


@dataclass(frozen=True, slots=True, kw_only=True)
class RunningApi:
    service: BroadcastingService
    dispatcher: Dispatcher
    http_port: int
    grpc_port: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RunningService:
    backends: Backends
    api: RunningApi | None


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
        store = await stack.enter_async_context(Store.open(settings.database.url))
        await store.migrate()
        queue = await stack.enter_async_context(
            Queue.connect(url, prefix=settings.nats.prefix, ack_wait=settings.nats.ack_wait)
        )
        yield Backends(store=store, queue=queue, metrics=Metrics())


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
async def running_api(settings: Settings, backends: Backends) -> AsyncIterator[RunningApi]:
    """gRPC and HTTP listening on the configured ports (0: any free port)."""
    tokens = TokenCheck((t.name, t.token) for t in settings.require_api_tokens())
    async with (
        Dispatcher(store=backends.store, queue=backends.queue) as dispatcher,
        Scheduler(store=backends.store, dispatcher=dispatcher),
        _webhook_notifier(settings, backends.store) as notifier,
    ):
        service = BroadcastingService(
            store=backends.store,
            queue=backends.queue,
            dispatcher=dispatcher,
            metrics=backends.metrics,
            max_user_ids=settings.server.max_user_ids,
            accept_callbacks=notifier is not None,
            on_finished=None if notifier is None else notifier.wake,
        )
        grpc_server = await create_server(service, tokens)
        grpc_port = grpc_server.add_insecure_port(
            f"{settings.server.host}:{settings.server.grpc_port}"
        )
        await grpc_server.start()
        runner = web.AppRunner(
            create_app(
                service,
                tokens,
                max_body_bytes=settings.server.max_body_bytes,
                sse_heartbeat=settings.server.sse_heartbeat,
            ),
            access_log=None,
            handle_signals=False,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, settings.server.host, settings.server.port)
            await site.start()
            http_port = int(runner.addresses[0][1])
            logger.info(
                "API listening",
                extra={
                    "host": settings.server.host,
                    "http_port": http_port,
                    "grpc_port": grpc_port,
                },
            )
            yield RunningApi(
                service=service, dispatcher=dispatcher, http_port=http_port, grpc_port=grpc_port
            )
        finally:
            await runner.cleanup()
            await grpc_server.stop(GRACE_SECONDS)


@asynccontextmanager
async def _webhook_notifier(
    settings: Settings, store: Store
) -> AsyncIterator[WebhookNotifier | None]:
    """The completion webhook sender; none without ``webhook.secret`` (callbacks refused)."""
    if not settings.webhook.secret:
        yield None
        return
    async with WebhookNotifier(store=store, settings=settings.webhook) as notifier:
        yield notifier


@asynccontextmanager
async def running_service(
    settings: Settings, *, api: bool, workers: int
) -> AsyncIterator[RunningService]:
    """The whole service in this process: the API when ``api``, and ``workers`` workers."""
    async with AsyncExitStack() as stack:
        backends = await stack.enter_async_context(open_backends(settings, embed_nats=api))
        running: RunningApi | None = None
        if api:
            running = await stack.enter_async_context(running_api(settings, backends))
        if workers:
            # aiogram takes seconds to import: only processes that send pay for it.
            from tgbroadcast.worker.runner import running_worker

        if workers and running is None and settings.worker.metrics_port:
            stack.enter_context(_metrics_endpoint(settings, backends.metrics))
        for _ in range(workers):
            await stack.enter_async_context(
                running_worker(
                    settings, store=backends.store, queue=backends.queue, metrics=backends.metrics
                )
            )
        yield RunningService(backends=backends, api=running)


@contextmanager
def _metrics_endpoint(settings: Settings, metrics: Metrics) -> Iterator[None]:
    """/metrics for a process without the HTTP bridge (a standalone worker)."""
    server, thread = start_http_server(
        settings.worker.metrics_port, addr=settings.server.host, registry=metrics.registry
    )
    try:
        yield
    finally:
        server.shutdown()
        thread.join()
