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
from typing import TYPE_CHECKING

from tgbroadcast.core.bots.directory import BotDirectory
from tgbroadcast.core.config import Settings
from tgbroadcast.core.domain.errors import BACKEND_UNAVAILABLE, ConfigError
from tgbroadcast.core.health import Readiness
from tgbroadcast.core.metrics import Metrics
from tgbroadcast.core.queue import NatsAccess, Queue
from tgbroadcast.core.store import Store
from tgbroadcast.launcher.natsserver import EmbeddedNatsServer
from tgbroadcast.launcher.probes import probes_app, serving_probes
from tgbroadcast.launcher.shutdown import ShutdownClock, ShutdownPlan

if TYPE_CHECKING:
    from tgbroadcast.launcher.api import RunningApi

logger = logging.getLogger(__name__)

EMBEDDED_WAIT = 30.0
"""Seconds a worker without ``nats.url`` waits for the server's embedded nats-server."""
DATABASE_RETRY = 1.0
"""Seconds between two attempts to reach the database at start-up."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Backends:
    store: Store
    queue: Queue
    metrics: Metrics
    bots: BotDirectory
    """Every bot, configured and stored (refreshed once at start)."""


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
        await _migrated(store)
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


async def _migrated(store: Store) -> None:
    """Migrate the schema, waiting (retrying every second, a warning each time) while the
    database cannot be reached, as the queue waits for NATS: a service started beside its
    database, or during its outage, comes up once it answers. Other failures are raised."""
    while True:
        try:
            await store.migrate()
            return
        except BACKEND_UNAVAILABLE as exc:
            if not _unreachable(exc):  # refused for good (a password, a missing database...)
                raise
            logger.warning(
                "the database cannot be reached; retrying every second",
                extra={"error": f"{type(exc).__name__}: {exc}"[:300]},
            )
        await asyncio.sleep(DATABASE_RETRY)


_MYSQL_UNREACHABLE = frozenset({1040, 1053, 2002, 2003, 2006, 2013})
"""MariaDB's and MySQL's codes for a server not there or not taking connections yet: too many
connections, shutting down, cannot connect (socket, TCP), gone away, connection lost (a proxy
in front of a server still starting)."""


def _unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database is not there (yet): a socket error anywhere in its
    chain (asyncpg's own, asyncmy's under its 2003), PostgreSQL's SQLSTATE for a connection,
    its resources or its starting up (08, 53, 57P), MariaDB's codes for the same, or SQLite's
    file locked by another process migrating it."""
    seen: set[int] = set()
    chain: list[BaseException | None] = [exc]
    while chain:
        error = chain.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, OSError):
            return True
        if str(getattr(error, "sqlstate", "") or "").startswith(("08", "53", "57P")):
            return True
        code = error.args[0] if error.args else None
        if isinstance(code, int) and code in _MYSQL_UNREACHABLE:
            return True
        if "database is locked" in str(error):  # SQLite
            return True
        chain += [error.__cause__, error.__context__, getattr(error, "orig", None)]
    return False


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
            # Only processes serving the API load its modules (gRPC's server, the REST app).
            from tgbroadcast.launcher.api import running_api

            running = await stack.enter_async_context(
                running_api(settings, backends, readiness=readiness, plan=plan)
            )
        if workers:
            # aiogram takes seconds to import: only processes that send pay for it, and
            # they build only the models they use (the others at their first use).
            from tgbroadcast.worker.aiogram_loading import import_aiogram

            import_aiogram()
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
