"""A server span for every HTTP request when tracing is on (:mod:`tgbroadcast.core.tracing`).

The span continues the caller's trace when its headers carry one (``traceparent``), is named
after the route's template (``POST /send-message``, ``GET /v1/broadcasts/{broadcast_id}``),
and says ``http.response.status_code``; it is failed for a 5xx answer only. Probes and
``/metrics`` are not traced; no header but the trace context, no query and no body is read.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

import tgbroadcast.core.tracing as tracing
from tgbroadcast.server.rest.guards import Handler

UNTRACED_PATHS: Final = frozenset({"/livez", "/readyz", "/metrics"})


@web.middleware
async def tracing_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The outermost middleware: its span covers the others (the guards, the access log)."""
    if not tracing.enabled() or request.path in UNTRACED_PATHS:
        return await handler(request)
    resource = request.match_info.route.resource
    attributes = {"http.request.method": request.method, "url.scheme": request.scheme}
    name = request.method  # no route matched: the path is the client's, not a name
    if resource is not None:
        attributes["http.route"] = resource.canonical
        name = f"{request.method} {resource.canonical}"
    refusal: web.HTTPException | None = None
    with tracing.server_span(name, request.headers, attributes):
        try:
            response = await handler(request)
            status = response.status
        except web.HTTPException as exc:  # an answer, not a failure of the span
            refusal, status = exc, exc.status
        tracing.set_attributes({"http.response.status_code": status})
        if status >= 500:
            tracing.fail(f"HTTP {status}")
    if refusal is not None:
        raise refusal
    return response
