"""The HTTP/JSON bridge: the REST contract, served by aiohttp in the server's event loop.

It calls the same core as gRPC (never gRPC itself). JSON field names are the proto's
snake_case names, ids are JSON numbers, enums are lower-case words (``"photo"``,
``"queued"``). Every error is ``application/problem+json`` (RFC 9457) with a precise
``detail``; validation errors also list ``errors: [{"field", "message"}]``. Every API route
refuses query parameters it does not know (400 naming each) rather than ignoring a misspelt
filter, and names a bad query value by its parameter (``tag[1]``, ``status[0]``,
``outcome[2]``) where gRPC names the request field (``filter.tags[1]``).

This module holds the app, its middlewares, the send routes, ``GET /v1/broadcasts/{id}``,
and ``/metrics``; ``/livez`` and ``/readyz`` are in :mod:`.health`; the other routes are in
:mod:`.controls`, :mod:`.reports`, :mod:`.list_events`, :mod:`.bots`,
:mod:`.users`, :mod:`.preview` and :mod:`.openapi`; the allow-list, limits, token check and
access log in :mod:`.guards`; the request metrics in :mod:`.metrics`. Reading requests is
:mod:`.params`, rendering answers :mod:`.rendering`, the content bodies :mod:`.content`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_urldispatcher import _default_expect_handler  # its 100 Continue
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError

from tgbroadcast.core.bots.service import BotService
from tgbroadcast.core.domain.errors import (
    BACKEND_UNAVAILABLE,
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from tgbroadcast.core.domain.recipients import packed_ids
from tgbroadcast.core.health import Readiness
from tgbroadcast.core.rules.validation import SendRequest
from tgbroadcast.core.service.broadcasting import BroadcastingService
from tgbroadcast.core.service.clicks import ClickService
from tgbroadcast.server.auth import (
    PermissionDenied,
    TokenCheck,
    bot_for,
    current_caller_name,
    visible_bots,
)
from tgbroadcast.server.guards import Guards
from tgbroadcast.server.rest import bots as bot_routes
from tgbroadcast.server.rest import (
    clicks,
    content,
    controls,
    guards,
    health,
    list_events,
    metrics,
    openapi,
    params,
    preview,
    protocol,
    rendering,
    reports,
    strict_json,
    token_info,
    tracing,
    users,
)
from tgbroadcast.server.scopes import REST
from tgbroadcast.server.streams import DEFAULT_MAX_WATCHERS, Watchers
from tgbroadcast.server.ui import routes as ui

logger = logging.getLogger(__name__)

UNAUTHENTICATED_PATHS = health.PATHS | {"/metrics", "/openapi.json", clicks.CLICK_ROUTE} | ui.PATHS
"""Served without a token: they reveal counts, the public contract and the dashboard's static
files (:mod:`tgbroadcast.server.ui`; by route template), never content or tokens. Only the
probes (:data:`.health.PATHS`) also ignore the allow-list."""
SERVICE_KEY = params.SERVICE_KEY
TOKENS_KEY = guards.TOKENS_KEY
MAX_BODY_KEY = params.MAX_BODY_KEY

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MALFORMED_BODY = (web.RequestPayloadError, HttpProcessingError)
"""Raised while reading a body the client mangled: never the server's fault."""


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure, ours or aiohttp's, leaves as problem+json; causes are logged, not sent.

    Details repeat at most :data:`params.ECHO_LIMIT` characters of any request value
    (:func:`params.bounded`); an aiohttp error keeps its headers (``Allow`` on a 405). A body
    the client broke off or mangled (bad chunking, bad compression) is the client's fault: a
    400 and one WARNING line, no traceback."""
    if _declared_too_large(request):
        return _too_large(request)  # before a byte of it is read
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding and encoding not in protocol.DECODED:  # aiohttp would pass it on undecoded
        return rendering.problem(
            415,
            f"Content-Encoding {strict_json.echo(encoding)!r} is not accepted: "
            f"{protocol.ACCEPTED_ENCODINGS}",
        )
    try:
        return await handler(request)
    except InvalidArgument as exc:
        bounded = params.bounded(exc)
        return rendering.problem(400, str(bounded), errors=list(bounded.violations))
    except NotFound as exc:
        return rendering.problem(404, params.clipped(str(exc)))
    except PermissionDenied as exc:
        return rendering.problem(403, params.clipped(str(exc)))
    except FailedPrecondition as exc:
        return rendering.problem(409, params.clipped(str(exc)), extra={"state": exc.state})
    except AlreadyExists as exc:
        return rendering.problem(409, params.clipped(str(exc)))
    except ResourceExhausted as exc:
        return guards.too_many(str(exc), exc.retry_after)
    except web.HTTPRequestEntityTooLarge:
        return _too_large(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_error(exc)
    except MALFORMED_BODY as exc:
        protocol.log_malformed(request, exc)
        return rendering.problem(400, "the request body is malformed (chunking or encoding)")
    except BACKEND_UNAVAILABLE as exc:
        if isinstance(exc, ConnectionResetError) and _client_gone(request):
            # The client hung up before its body was read: its fault, not the backends'.
            protocol.log_malformed(request, exc)
            return rendering.problem(400, "the request body was cut off: the connection closed")
        logger.warning("backend unavailable", extra={"error": type(exc).__name__})
        return rendering.problem(503, "the database or the queue is unavailable; try again")
    except Exception:
        logger.exception("internal error", extra={"path": request.path})
        return rendering.problem(500, "internal error")


def _declared_too_large(request: web.Request) -> bool:
    declared = request.content_length
    return declared is not None and declared > request.app[MAX_BODY_KEY]


def _too_large(request: web.Request) -> web.Response:
    limit = request.app[MAX_BODY_KEY]
    return rendering.problem(413, f"request body is larger than the limit of {limit} bytes")


async def _expect_within_limit(request: web.Request) -> web.StreamResponse | None:
    """``Expect: 100-continue``: a body declared over the limit is refused before the client
    sends it (a 70 MB upload was sent whole, then refused); any other goes on as aiohttp's
    own handler lets it (its ``100 Continue``)."""
    if _declared_too_large(request):
        return _too_large(request)
    await _default_expect_handler(request)
    return None


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _http_error(exc: web.HTTPException) -> web.Response:
    """aiohttp's 4xx as problem+json, with its headers (``Allow`` on 405)."""
    answer = rendering.problem(exc.status, params.clipped(exc.text or exc.reason))
    for name, value in exc.headers.items():
        if name.lower() not in ("content-type", "content-length"):
            answer.headers[name] = value
    return answer


async def send_message(request: web.Request) -> web.Response:
    params.check_query(request)
    if request.content_type == "multipart/form-data":
        body, media_data, media_filename = await _multipart_send(request)
    else:
        body = await params.json_body(request, content.SendMessageBody)
        media_data, media_filename = b"", ""
    send = SendRequest(
        message=body.message or "",
        media_type=body.media_type or "",
        media_url=body.media_url or "",
        user_ids=packed_ids(body.user_ids or ()),
        all_users=body.all_users,
        filter=None if body.filter is None else body.filter.value(),
        allow_paid_broadcast=body.allow_paid_broadcast,
        max_stars=body.max_stars or 0,
        callback_url=body.callback_url or "",
        media_data=media_data,
        media_filename=media_filename,
        variants=content.variant_inputs(body.variants),
        track_clicks=body.track_clicks,
        **content.send_fields(body),
        **controls.send_options(
            request, idempotency_key=body.idempotency_key, send_at=body.send_at
        ),
    )
    bot = bot_for(body.bot or "")
    del body  # its list of ids (a million: 36 MB) is not held while the broadcast is written
    try:
        accepted = await params.service(request).send_message(
            send, created_by=current_caller_name(), bot=bot
        )
    except InvalidArgument as exc:  # the upload is the form's part "media" (its filename)
        raise params.renamed(exc, _UPLOAD_FIELDS) from None
    return controls.accepted_response(accepted)


_UPLOAD_FIELDS: Final = (("media_data", "media"), ("media_filename", "media"))


_SEND_FIELDS = content.SendMessageBody.model_fields
_FORM_FLAGS = frozenset(name for name, info in _SEND_FIELDS.items() if info.annotation is bool)
_FORM_STRINGS = frozenset(
    name for name, info in _SEND_FIELDS.items() if info.annotation == str | None
)
_FORM_TEXT_FIELDS = frozenset(_SEND_FIELDS)
"""Every field of the JSON body is a form field: strings as they are, flags ``true`` or
``false``, the rest (``user_ids``, ``filter``, ``entities``, ``reply_markup``, ``album``, ...)
as JSON text."""


async def _multipart_send(request: web.Request) -> tuple[content.SendMessageBody, bytes, str]:
    """:func:`_read_multipart`; a body that is not multipart as declared (no boundary, no
    closing delimiter, an unknown part encoding: aiohttp raises these) is a 400."""
    try:
        return await _read_multipart(request)
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:
        logger.warning("malformed multipart body", extra={"error": type(exc).__name__})
        raise InvalidArgument.single("body", "is not valid multipart/form-data") from None


async def _read_multipart(request: web.Request) -> tuple[content.SendMessageBody, bytes, str]:
    """``multipart/form-data``: the JSON body's fields as form fields (see
    :data:`_FORM_TEXT_FIELDS`), and the file itself as the part ``media``; returns the body,
    the file and its name. Violations name the form field (``filter.tags[0]`` inside one)."""
    limit = request.app[MAX_BODY_KEY]
    data: dict[str, Any] = {}
    media = b""
    filename = ""
    violations: list[FieldViolation] = []
    budget = [limit]  # bytes the rest of the body may still have, over all parts
    seen: set[str] = set()
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            violations.append(FieldViolation("body", "nested multipart bodies are not accepted"))
            continue
        name = part.name or ""
        if name in seen:
            violations.append(FieldViolation(name, "is given twice"))
        seen.add(name)
        raw = await _read_part(part, budget, limit)
        if name == "media":
            media, filename = raw, part.filename or ""
            if not raw:
                violations.append(FieldViolation("media", "is an empty file"))
                filename = ""  # (no second violation for a name without a file)
        elif name in _FORM_TEXT_FIELDS:
            try:
                _form_value(data, name, raw.decode("utf-8"), violations)
            except UnicodeDecodeError:
                violations.append(FieldViolation(name, "is not UTF-8"))
        else:
            violations.append(FieldViolation(name or "body", "is not a known field"))
    try:
        body = content.SendMessageBody.model_validate(data)
    except ValidationError as exc:
        violations.extend(params.violations(exc))
    if violations:
        raise InvalidArgument(violations)
    return body, media, filename


def _form_value(
    data: dict[str, Any], name: str, text: str, violations: list[FieldViolation]
) -> None:
    """Puts the form field's value into ``data`` as the JSON body would hold it."""
    if name in _FORM_STRINGS:
        data[name] = text
    elif name in _FORM_FLAGS:
        flag = text.strip().lower()
        if flag in ("true", "false"):
            data[name] = flag == "true"
        else:
            violations.append(FieldViolation(name, "must be true or false"))
    else:
        try:
            data[name] = strict_json.loads(text.encode())
        except InvalidArgument as exc:  # read as strictly as a JSON body (64-bit integers...)
            violations.extend(_form_violation(name, v) for v in exc.violations)


def _form_violation(name: str, violation: FieldViolation) -> FieldViolation:
    """A violation inside the form field ``name``'s JSON text, named from the field."""
    if violation.field == "body":
        return FieldViolation(name, "must be JSON text, as the field is in a JSON body")
    separator = "" if violation.field.startswith("[") else "."
    return FieldViolation(name + separator + violation.field, violation.description)


async def _read_part(part: BodyPartReader, budget: list[int], limit: int) -> bytes:
    """The part's bytes, counted against what the whole body may still hold."""
    chunks: list[bytes] = []
    while chunk := await part.read_chunk():
        budget[0] -= len(chunk)
        if budget[0] < 0:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=limit - budget[0])
        chunks.append(chunk)
    return b"".join(chunks)


async def get_broadcast(request: web.Request) -> web.Response:
    broadcast_id = params.path_id(request, "broadcast_id")
    params.check_query(request)
    report = await params.service(request).get_broadcast(broadcast_id, visible=visible_bots())
    return web.json_response(rendering.broadcast_json(report))


async def metrics_page(request: web.Request) -> web.Response:
    body = await params.service(request).metrics_text()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(
    service: BroadcastingService,
    tokens: TokenCheck,
    *,
    max_body_bytes: int,
    sse_heartbeat: float = 15.0,
    guard: Guards | None = None,
    readiness: Readiness | None = None,
    watchers: Watchers | None = None,
    observer: metrics.RequestObserver | None = None,
    bot_service: BotService | None = None,
    click_service: ClickService | None = None,
) -> web.Application:
    """``guard``: the allow-list, rate limit and failed-authentication throttle (see
    :mod:`.guards`); none of them when omitted. ``readiness``: what ``/readyz`` checks (only
    the drain when omitted); ``watchers``: the bound on open event streams, shared with gRPC
    (:mod:`tgbroadcast.server.streams`); ``observer``: told of every request as it ends
    (:mod:`.metrics`); ``bot_service``: what ``/v1/bots`` manages (409 without it);
    ``click_service``: what ``/c/{code}`` opens (404 without it)."""
    app = web.Application(
        client_max_size=max_body_bytes,
        middlewares=[
            tracing.tracing_middleware,
            metrics.metrics_middleware,
            guards.access_log_middleware,
            errors_middleware,
            guards.guard_middleware,
        ],
    )
    app[SERVICE_KEY] = service
    app[TOKENS_KEY] = tokens
    app[guards.GUARDS_KEY] = Guards() if guard is None else guard
    app[guards.PUBLIC_PATHS_KEY] = UNAUTHENTICATED_PATHS
    app[guards.RULES_KEY] = REST
    app[MAX_BODY_KEY] = max_body_bytes
    metrics.observe(app, observer)
    app[reports.WATCHERS_KEY] = Watchers(DEFAULT_MAX_WATCHERS) if watchers is None else watchers
    app.router.add_post("/send-message", send_message, expect_handler=_expect_within_limit)
    app.router.add_post("/v1/broadcasts", send_message, expect_handler=_expect_within_limit)
    list_events.add_routes(app)  # before the route of one broadcast, which would match it
    app.router.add_get("/v1/broadcasts/{broadcast_id}", get_broadcast)
    users.add_routes(app)
    health.add_routes(app, Readiness() if readiness is None else readiness)
    app.router.add_get("/metrics", metrics_page)
    openapi.add_routes(app)
    reports.add_routes(app, heartbeat=sse_heartbeat)
    preview.add_routes(app)
    controls.add_routes(app)
    bot_routes.add_routes(app, bot_service)
    clicks.add_routes(app, click_service)
    token_info.add_routes(app)
    ui.add_routes(app)
    return app
