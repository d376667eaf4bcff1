"""The HTTP connection handler: what aiohttp answers before any route or middleware runs.

A request the HTTP parser cannot read (a bad request line, a header with control bytes, bad
chunking, a line too long) never reaches the app: aiohttp's own ``RequestHandler.handle_error``
answers it, logging at ERROR with a traceback and sending the parser's message as the body —
which quotes the offending bytes, a full ``Authorization`` header included. Anyone could
flood the log or see their own header mirrored by an intermediary's 400.

:class:`QuietRequestHandler` answers such a request with a fixed ``application/problem+json``
400 (nothing of the request echoed) and logs one WARNING line without a traceback, naming the
client and the kind of error only: once per connection, and at most one line per
:data:`MALFORMED_LOG_INTERVAL` for the whole process (:class:`MalformedLog`; the next line
counts those left out), so many bad connections cannot flood the log either.
:class:`ApiRunner` is ``web.AppRunner`` with that handler on every connection. Anything else
reaching ``handle_error`` (a handler's unexpected exception: a bug) keeps aiohttp's answer and
its ERROR log.

This leans on aiohttp internals (``RequestHandler.handle_error``'s signature,
``web.Server``'s ``_kwargs`` and ``_loop``): the dependency is pinned to the minor versions
checked (``tests/test_hostile_input.py`` fails loudly when they change).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Final

from aiohttp import compression_utils, web
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from tgbroadcast.server.rest import rendering

logger = logging.getLogger(__name__)

MALFORMED_DETAIL: Final = "malformed HTTP request"
DECODED: Final = frozenset(
    {"gzip", "deflate", "identity"}
    | ({"br"} if getattr(compression_utils, "HAS_BROTLI", False) else set())
    | ({"zstd"} if getattr(compression_utils, "HAS_ZSTD", False) else set())  # aiohttp 3.13+
)
"""Content-Encodings aiohttp decodes: br and zstd only with their packages installed (without,
its parser refuses such a body before the app sees it: answered 415 here, not as malformed)."""
ACCEPTED_ENCODINGS: Final = ", ".join(sorted(DECODED - {"identity"}))
MALFORMED_LOG_INTERVAL: Final = 1.0
"""Seconds between two "malformed HTTP request" lines of the process, at least."""


class MalformedLog:
    """At most one WARNING per ``interval`` seconds; the next line written says how many were
    left out in between (``suppressed``)."""

    def __init__(
        self,
        interval: float = MALFORMED_LOG_INTERVAL,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval = interval
        self._clock = clock
        self._last = float("-inf")
        self._suppressed = 0

    def warn(self, client: str | None, exc: BaseException) -> None:
        now = self._clock()
        if now - self._last < self._interval:
            self._suppressed += 1
            return
        self._last = now
        extra: dict[str, Any] = {"client": client, "error": type(exc).__name__}
        if self._suppressed:
            extra["suppressed"] = self._suppressed
            self._suppressed = 0
        logger.warning("malformed HTTP request", extra=extra)


MALFORMED_LOG = MalformedLog()
"""The process's one log of malformed requests, shared by every connection and listener."""


def client_caused(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is the client's malformed HTTP: a parser error or
    a body the client mangled."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, (HttpProcessingError, web.RequestPayloadError)):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def log_malformed(request: BaseRequest, exc: BaseException) -> None:
    """Logs a malformed request once per connection: at WARNING, no traceback, nothing of
    the request but the client's address (the parser, the handler reading the body and
    aiohttp's lingering read may each notice the same bad bytes)."""
    protocol = request.protocol
    if isinstance(protocol, QuietRequestHandler):
        protocol.malformed(request.remote, exc)
    else:
        _warn(request.remote, exc)


def _warn(client: str | None, exc: BaseException) -> None:
    MALFORMED_LOG.warn(client, exc)


class QuietRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering unreadable requests without echo or traceback."""

    _malformed_logged = False

    def malformed(self, client: str | None, exc: BaseException) -> None:
        """See :func:`log_malformed`."""
        if not self._malformed_logged:
            self._malformed_logged = True
            _warn(client, exc)

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """aiohttp logs at ERROR with a traceback what escapes a request, including the
        client's bad bytes surfacing again when it drains an unread body: those are
        :func:`log_malformed`'s, every other exception stays aiohttp's."""
        exc = kw.get("exc_info")
        if isinstance(exc, BaseException) and client_caused(exc):
            client = None if self.transport is None else self.transport.get_extra_info("peername")
            self.malformed(None if client is None else str(client[0]), exc)
            return
        super().log_exception(*args, **kw)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        detail = MALFORMED_DETAIL
        if isinstance(exc, ContentEncodingError):  # well made, in an encoding not decoded here
            status, detail = 415, f"the Content-Encoding is not accepted: {ACCEPTED_ENCODINGS}"
        else:
            self.malformed(request.remote, exc)
        if request.writer.output_size > 0:  # as aiohttp: too late for an answer
            raise ConnectionError("response already started; cannot send the error")
        body = {
            "type": "about:blank",
            "title": HTTPStatus(status).phrase,
            "status": status,
            "detail": detail,
        }
        answer = web.Response(
            status=status, text=json.dumps(body), content_type=rendering.PROBLEM_JSON
        )
        answer.force_close()
        return answer


class _Server(web.Server):
    """aiohttp's low-level server, making a :class:`QuietRequestHandler` per connection."""

    def __call__(self) -> RequestHandler:
        return QuietRequestHandler(self, loop=self._loop, **self._kwargs)


class ApiRunner(web.AppRunner):
    """``web.AppRunner`` whose connections are handled by :class:`QuietRequestHandler`."""

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        return _Server(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=made._loop,
            **made._kwargs,
        )
