"""``GET /livez`` and ``GET /readyz``: the process's liveness and readiness, without a token.

* ``/livez`` — 200 ``{"status": "live"}`` whenever the event loop answers at all: restart the
  process only when this fails.
* ``/readyz`` — 200 ``{"status": "ready"}`` while every readiness check passes (the database
  answers a query, NATS and JetStream answer, the process is not draining); otherwise 503
  ``application/problem+json`` with ``checks`` (each check's result, ``"ok"`` or why not) and
  a ``detail`` naming the failing checks: send no traffic here until it passes again.
* ``/healthz`` — the old name of the probe, kept so existing probes keep working: it answers
  exactly as ``/readyz`` does (it used to say ``ok`` whatever the backends did).

Served by the API's HTTP listener and by a standalone worker's probe port
(``worker.metrics_port``), with the same :class:`~tgbroadcast.core.health.Readiness`.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from tgbroadcast.core.health import Readiness
from tgbroadcast.server.rest import rendering

LIVEZ: Final = "/livez"
READYZ: Final = "/readyz"
HEALTHZ: Final = "/healthz"
"""Deprecated: ``/readyz`` under its old name."""
PATHS: Final = frozenset({LIVEZ, READYZ, HEALTHZ})
READINESS_KEY: Final = web.AppKey("readiness", Readiness)


def add_routes(app: web.Application, readiness: Readiness) -> None:
    app[READINESS_KEY] = readiness
    app.router.add_get(LIVEZ, livez)
    app.router.add_get(READYZ, readyz)
    app.router.add_get(HEALTHZ, readyz)


async def livez(request: web.Request) -> web.Response:
    return web.json_response({"status": "live"}, headers={"Cache-Control": "no-store"})


async def readyz(request: web.Request) -> web.Response:
    report = await request.app[READINESS_KEY].check()
    if report.ready:
        return web.json_response({"status": "ready"}, headers={"Cache-Control": "no-store"})
    answer = rendering.problem(
        503,
        "not ready: " + ", ".join(report.failing),
        extra={"checks": dict(report.checks)},
    )
    answer.headers["Cache-Control"] = "no-store"
    return answer
