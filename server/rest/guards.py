"""The HTTP side of :mod:`tgbroadcast.server.guards`: who may call, how often, and the access log.

:func:`guard_middleware` runs, in this order: the network allow-list (403 on every route but
:data:`NETWORK_EXEMPT_PATHS`, so orchestrators probe from anywhere), then — except on the
public paths the app names — the failed-authentication throttle (429), the token (401), and
the token's request rate (429); both 429s carry ``Retry-After``. An authenticated request
runs with its :class:`~tgbroadcast.server.auth.Caller` in
:data:`~tgbroadcast.server.auth.CALLER`.

:func:`access_log_middleware` writes one line per request on the ``tgbroadcast.access``
logger: method, route template, status, duration, token name, client address. Never a
header, a query or a token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from tgbroadcast.server.auth import CALLER, Caller, TokenCheck
from tgbroadcast.server.guards import Guards, retry_after_header
from tgbroadcast.server.rest import rendering

access_logger = logging.getLogger("tgbroadcast.access")

NETWORK_EXEMPT_PATHS: Final = frozenset({"/livez", "/readyz"})
"""Answered whatever the client's address: liveness and readiness probes."""
MAX_LOGGED_PATH: Final = 100
"""Characters of a path no route matched that the access log keeps."""
CLIENT_CLOSED: Final = 499
"""The access log's status for a request the client gave up on (nginx's convention)."""

GUARDS_KEY: Final = web.AppKey("guards", Guards)
TOKENS_KEY: Final = web.AppKey("tokens", TokenCheck)
PUBLIC_PATHS_KEY: Final = web.AppKey("public_paths", frozenset[str])
"""Paths served without a token (still behind the allow-list unless network-exempt)."""
CALLER_KEY: Final = web.RequestKey("caller", Caller)
CLIENT_KEY: Final = web.RequestKey("client_address", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_UNAUTHENTICATED = "missing or invalid API token (Authorization: Bearer <token>)"


@web.middleware
async def guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    guards = request.app[GUARDS_KEY]
    address = guards.network.client_address(
        request.remote, request.headers.getall("X-Forwarded-For", ())
    )
    request[CLIENT_KEY] = address
    if request.path not in NETWORK_EXEMPT_PATHS and not guards.network.allows(address):
        return rendering.problem(
            403, f"client address {address[:100]} is not in server.allowed_networks"
        )
    if request.path in request.app[PUBLIC_PATHS_KEY]:
        return await handler(request)
    if wait := guards.auth_failures.blocked(address):
        return too_many(wait, "too many failed authentications from this address; try later")
    name = request.app[TOKENS_KEY].identify(request.headers.get("Authorization"))
    if name is None:
        guards.auth_failures.failed(address)
        return rendering.problem(401, _UNAUTHENTICATED)
    caller = Caller(token_name=name, address=address)
    request[CALLER_KEY] = caller
    if wait := guards.limiter.acquire(name):
        return too_many(
            wait,
            f"more than server.requests_per_second ({guards.limiter.rate:g}) with this API "
            "token; slow down",
        )
    reset = CALLER.set(caller)
    try:
        return await handler(request)
    finally:
        CALLER.reset(reset)


def too_many(wait: float, detail: str) -> web.Response:
    """429 problem+json with ``Retry-After`` (whole seconds, rounded up)."""
    response = rendering.problem(429, detail)
    response.headers["Retry-After"] = retry_after_header(wait)
    return response


@web.middleware
async def access_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The outermost middleware: sees the status every other one settled on."""
    started = time.monotonic()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = CLIENT_CLOSED
        raise
    finally:
        log_request(request, status, time.monotonic() - started)


def log_request(request: web.Request, status: int, seconds: float) -> None:
    caller = request.get(CALLER_KEY)
    access_logger.info(
        "request",
        extra={
            "transport": "http",
            "method": request.method,
            "route": route_template(request),
            "status": status,
            "duration_ms": round(seconds * 1000, 1),
            "token_name": "" if caller is None else caller.token_name,
            "client": request.get(CLIENT_KEY, request.remote or ""),
        },
    )


def route_template(request: web.Request) -> str:
    """The matched route's template (``/v1/broadcasts/{broadcast_id}``), or the raw path,
    still percent-encoded (no line breaks in a log line) and cut short, when none matched."""
    resource = request.match_info.route.resource
    if resource is not None:
        return resource.canonical
    return request.rel_url.raw_path[:MAX_LOGGED_PATH]
