"""The HTTP side of :mod:`tgbroadcast.server.guards`: who may call, how often, and the access log.

:func:`guard_middleware` answers the probes (:data:`.health.PATHS`) to anyone, and puts every
other request through :meth:`~tgbroadcast.server.guards.Guards.admit` — the network
allow-list (403), then, except on the public paths the app names, the failed-authentication
throttle (429), the token (401) and the token's request rate (429, both with
``Retry-After``) — turning a refusal into problem+json; then the route's scope
(:mod:`tgbroadcast.server.scopes`: 403 naming it). An authenticated request runs with its
:class:`~tgbroadcast.server.auth.Caller` in :data:`~tgbroadcast.server.auth.CALLER`; the bot
a request names and the broadcasts it may see are checked by the routes and the service.

:func:`access_log_middleware` writes one line per request on the ``tgbroadcast.access``
logger: method, route template, status, duration, token name, client address. Never a
header, a query or a token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from aiohttp import web

from tgbroadcast.server.auth import CALLER, Caller, TokenCheck
from tgbroadcast.server.guards import Guards, Refusal, RefusalKind, retry_after_header
from tgbroadcast.server.rest import health, rendering
from tgbroadcast.server.rest.clicks import CLICK_PREFIX
from tgbroadcast.server.scopes import Rule, judge, rest_rule

access_logger = logging.getLogger("tgbroadcast.access")

MAX_LOGGED_PATH: Final = 100
"""Characters of a path no route matched that the access log keeps."""
CLIENT_CLOSED: Final = 499
"""The access log's status for a request the client gave up on (nginx's convention)."""

GUARDS_KEY: Final = web.AppKey("guards", Guards)
TOKENS_KEY: Final = web.AppKey("tokens", TokenCheck)
PUBLIC_PATHS_KEY: Final = web.AppKey("public_paths", frozenset[str])
"""Paths, or route templates (``/ui/{path}``), served without a token (still behind the
allow-list, unless a probe)."""
RULES_KEY: Final = web.AppKey("scope_rules", Mapping[tuple[str, str], Rule])
"""The routes' scopes (:data:`tgbroadcast.server.scopes.REST`); an app without it (a test's)
checks none."""
CALLER_KEY: Final = web.RequestKey("caller", Caller)
CLIENT_KEY: Final = web.RequestKey("client_address", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATUS: Final = {
    RefusalKind.FORBIDDEN: 403,
    RefusalKind.UNAUTHENTICATED: 401,
    RefusalKind.TOO_MANY: 429,
}


@web.middleware
async def guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    guards = request.app[GUARDS_KEY]
    address = guards.network.client_address(
        request.remote, request.headers.getall("X-Forwarded-For", ())
    )
    request[CLIENT_KEY] = address
    # Probes come from wherever the orchestrator runs, tracked links' clicks from anywhere.
    if request.path in health.PATHS or request.path.startswith(CLICK_PREFIX):
        return await handler(request)
    verdict = guards.admit(
        request.app[TOKENS_KEY],
        address,
        request.headers.get("Authorization"),
        public=_public(request, request.app[PUBLIC_PATHS_KEY]),
    )
    if isinstance(verdict, Refusal):
        if verdict.caller is not None:
            request[CALLER_KEY] = verdict.caller
        return refused(verdict)
    if verdict is None:
        return await handler(request)
    request[CALLER_KEY] = verdict
    if (answer := _by_scope(request, verdict)) is not None:
        return answer
    reset = CALLER.set(verdict)
    try:
        return await handler(request)
    finally:
        CALLER.reset(reset)


def _public(request: web.Request, public: frozenset[str]) -> bool:
    """Whether ``request`` needs no token: its path, or the template of the route it matched,
    is one of ``public``."""
    if request.path in public:
        return True
    resource = request.match_info.route.resource
    return request.match_info.http_exception is None and (
        resource is not None and resource.canonical in public
    )


def _by_scope(request: web.Request, caller: Caller) -> web.Response | None:
    """The answer when the route's rule does not let ``caller`` through; None to serve it.
    A path no route matches is left to the router (404, 405)."""
    rules = request.app.get(RULES_KEY)
    if rules is None or request.match_info.http_exception is not None:
        return None
    resource = request.match_info.route.resource
    rule = rest_rule(request.method, "" if resource is None else resource.canonical, rules)
    denied = judge(caller, rule)
    return None if denied is None else rendering.problem(403, denied.detail)


def refused(refusal: Refusal) -> web.Response:
    """The refusal as problem+json: 403, 401, or 429 with ``Retry-After``."""
    if refusal.kind is RefusalKind.TOO_MANY:
        return too_many(refusal.detail, refusal.retry_after)
    return rendering.problem(STATUS[refusal.kind], refusal.detail)


def too_many(detail: str, retry_after: float | None = None) -> web.Response:
    """429 problem+json, with ``Retry-After`` (whole seconds, rounded up) when waiting helps."""
    response = rendering.problem(429, detail)
    if retry_after is not None:
        response.headers["Retry-After"] = retry_after_header(retry_after)
    return response


async def settled(
    request: web.Request, handler: Handler, done: Callable[[int, float], None]
) -> web.StreamResponse:
    """``handler(request)``, then ``done(status, seconds)`` with the status the client got:
    the response's, an ``HTTPException``'s, :data:`CLIENT_CLOSED` for a request the client
    gave up on, 500 for anything else."""
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
        done(status, time.monotonic() - started)


@web.middleware
async def access_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The outermost middleware: sees the status every other one settled on."""
    return await settled(
        request, handler, lambda status, seconds: log_request(request, status, seconds)
    )


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
