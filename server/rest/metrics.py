"""HTTP request metrics: every request, told to a :class:`RequestObserver` when it ends.

The route is the matched route's template (``/v1/broadcasts/{broadcast_id}``, never the
path with its id), ``unmatched`` when none matched (a 404 or 405), so the labels stay few
whatever clients send; so is the method (an unusual one is ``other``). The status is the
one the client got — the problem+json ones included —, 499 for a request the client gave
up on (nginx's convention); the duration of an event stream runs until the stream ends.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final, Protocol

from aiohttp import web

from tgbroadcast.server.rest.guards import settled

UNMATCHED: Final = "unmatched"
"""The route of a request no route matched."""
OTHER_METHOD: Final = "other"
METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Methods recorded by name; any other is :data:`OTHER_METHOD`."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RequestObserver(Protocol):
    """Told of every request when it ends (the metrics)."""

    def __call__(self, *, route: str, method: str, status: int, seconds: float) -> None: ...


def _unobserved(*, route: str, method: str, status: int, seconds: float) -> None:
    """The observer of an app given none."""


OBSERVER_KEY: Final[web.AppKey[RequestObserver]] = web.AppKey("request_observer")


def observe(app: web.Application, observer: RequestObserver | None) -> None:
    """Requests to ``app`` are told to ``observer`` (none: not recorded)."""
    app[OBSERVER_KEY] = _unobserved if observer is None else observer


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outside every middleware that settles the status (the errors and the guards)."""
    observer = request.app.get(OBSERVER_KEY, _unobserved)

    def done(status: int, seconds: float) -> None:
        observer(
            route=route_label(request),
            method=request.method if request.method in METHODS else OTHER_METHOD,
            status=status,
            seconds=seconds,
        )

    return await settled(request, handler, done)


def route_label(request: web.Request) -> str:
    """The matched route's template, or :data:`UNMATCHED`."""
    resource = request.match_info.route.resource
    return UNMATCHED if resource is None else resource.canonical
