"""A standalone worker's probe port (``worker.metrics_port``): ``/livez``, ``/readyz`` and
``/metrics``, served by a small aiohttp app in the worker's event loop.

The same handlers and the same :class:`~tgbroadcast.core.health.Readiness` as the API's HTTP
listener (:mod:`tgbroadcast.server.rest.health`): a worker is ready while the database and
NATS answer and it is not draining. No token: like the API's, these reveal counts, never
content or tokens. ``/metrics`` is the process's registry (:mod:`tgbroadcast.core.metrics`):
the sending metrics, the queue's, the database's and the process's; the queue's gauges are
read from the queue given to :meth:`~tgbroadcast.core.metrics.Metrics.add_queue` at scrape
time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from tgbroadcast.core.domain.errors import ConfigError
from tgbroadcast.core.health import Readiness
from tgbroadcast.core.metrics import Metrics
from tgbroadcast.server.rest import health

METRICS_KEY: Final = web.AppKey("metrics", Metrics)
STOP_WITHIN: Final = 1.0
"""Seconds a probe request in flight may take once the process stops."""


def probes_app(readiness: Readiness, metrics: Metrics) -> web.Application:
    app = web.Application()
    health.add_routes(app, readiness)
    app[METRICS_KEY] = metrics
    app.router.add_get("/metrics", _metrics)
    return app


async def _metrics(request: web.Request) -> web.Response:
    body = await request.app[METRICS_KEY].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@asynccontextmanager
async def serving_probes(app: web.Application, *, host: str, port: int) -> AsyncIterator[int]:
    """``app`` listening on ``host``:``port`` (0: a free port, yielded) until the exit."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=STOP_WITHIN)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:  # as the API's ports: the key, not a traceback
            where = f"{host}:{port}"
            raise ConfigError(
                "worker.metrics_port", f"cannot listen on {where}: {exc.strerror or exc}"
            ) from None
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()
