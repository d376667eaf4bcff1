"""The API's part of the running service: the dispatcher, the scheduler and the core behind gRPC
and HTTP listeners (:func:`running_api`).

Imported only by the processes that serve the API (``tgbroadcast run`` and ``server``): a
worker process never loads gRPC's server, the REST app or the core's services.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from aiohttp import web

from tgbroadcast.core.background.scheduler import Scheduler
from tgbroadcast.core.background.webhooks import WebhookNotifier
from tgbroadcast.core.bots.service import BotService
from tgbroadcast.core.config import Settings
from tgbroadcast.core.domain.errors import ConfigError
from tgbroadcast.core.health import Readiness
from tgbroadcast.core.service.broadcasting import BroadcastingService
from tgbroadcast.core.service.clicks import ClickService
from tgbroadcast.core.service.dispatch import Dispatcher
from tgbroadcast.launcher.shutdown import ApiDrain, ShutdownPlan
from tgbroadcast.server.auth import TokenCheck
from tgbroadcast.server.grpc.health import HealthFollower
from tgbroadcast.server.grpc.servicer import create_server
from tgbroadcast.server.guards import Guards
from tgbroadcast.server.rest.app import create_app
from tgbroadcast.server.rest.protocol import ApiRunner
from tgbroadcast.server.streams import Watchers
from tgbroadcast.server.tls import ServerCertificates

if TYPE_CHECKING:
    from tgbroadcast.launcher.app import Backends

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunningApi:
    service: BroadcastingService
    dispatcher: Dispatcher
    http_port: int
    grpc_port: int
    drain: ApiDrain


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
        try:
            grpc_port = (
                grpc_server.add_insecure_port(grpc_address)
                if certificates is None
                else grpc_server.add_secure_port(grpc_address, certificates.grpc_credentials())
            )
        except RuntimeError:  # gRPC says no more than "Failed to bind"
            raise ConfigError(
                "server.grpc_port",
                f"cannot listen on {grpc_address} (in use, or not an address of this host)",
            ) from None
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
            try:
                await site.start()
            except OSError as exc:
                address = f"{_bracketed(settings.server.host)}:{settings.server.port}"
                raise ConfigError(
                    "server.port", f"cannot listen on {address}: {exc.strerror or exc}"
                ) from None
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
