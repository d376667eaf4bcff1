"""The HTTP/JSON bridge: the REST contract, served by aiohttp in the server's event loop.

It calls the same core as gRPC (never gRPC itself). JSON field names are the proto's
snake_case names, ids are JSON numbers, enums are lower-case words (``"photo"``,
``"queued"``). Every error is ``application/problem+json`` (RFC 9457) with a precise
``detail``; validation errors also list ``errors: [{"field", "message"}]``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from http import HTTPStatus
from typing import Any, TypeVar

from aiohttp import BodyPartReader, web
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, ValidationError

from broadcasting.errors import (
    BACKEND_UNAVAILABLE,
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from broadcasting.model import User, UserFilter, UserProfile
from broadcasting.service import BroadcastingService, BroadcastReport
from broadcasting.validation import SendRequest
from server import (
    content_json,
    openapi,
    rest_content,
    rest_lifecycle,
    rest_reports,
    rest_users,
)
from server.auth import TokenCheck

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
UNAUTHENTICATED_PATHS = frozenset({"/healthz", "/metrics", "/openapi.json"})
"""Served without a token: they reveal counts and the public contract, never content or
tokens."""
SERVICE_KEY = web.AppKey("service", BroadcastingService)
TOKENS_KEY = web.AppKey("tokens", TokenCheck)
MAX_BODY_KEY = web.AppKey("max_body_bytes", int)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


M = TypeVar("M", bound=BaseModel)


class UserFilterBody(_Body):
    tags: list[str] = []
    language_codes: list[str] = []

    def value(self) -> UserFilter:
        return UserFilter(tags=tuple(self.tags), language_codes=tuple(self.language_codes))


class SendMessageBody(_Body, content_json.ContentBody):
    message: str | None = None
    media_type: str | None = None
    media_url: str | None = None
    user_ids: list[int] | None = None
    all_users: bool = False
    filter: UserFilterBody | None = None
    allow_paid_broadcast: bool = False
    callback_url: str | None = None
    send_at: str | None = None
    idempotency_key: str | None = None


class UserBody(_Body):
    id: int
    username: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    language_code: str | None = None
    tags: list[str] = []
    """Replaces the user's tags: an upsert without ``tags`` leaves the user with none."""


class UpsertUsersBody(_Body):
    users: list[UserBody]


def problem(
    status: int,
    detail: str,
    *,
    errors: list[FieldViolation] | None = None,
    extra: dict[str, Any] | None = None,
) -> web.Response:
    """``extra``: RFC 9457 extension members (e.g. a conflict's current ``state``)."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        **(extra or {}),
    }
    if errors:
        body["errors"] = [{"field": e.field, "message": e.description} for e in errors]
    headers = {"WWW-Authenticate": 'Bearer realm="tgbroadcast"'} if status == 401 else None
    return web.Response(
        status=status, text=json.dumps(body), content_type=PROBLEM_JSON, headers=headers
    )


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure, ours or aiohttp's, leaves as problem+json; causes are logged, not sent."""
    try:
        return await handler(request)
    except InvalidArgument as exc:
        return problem(400, str(exc), errors=list(exc.violations))
    except NotFound as exc:
        return problem(404, str(exc))
    except FailedPrecondition as exc:
        return problem(409, str(exc), extra={"state": exc.state})
    except AlreadyExists as exc:
        return problem(409, str(exc))
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[MAX_BODY_KEY]
        return problem(413, f"request body is larger than the limit of {limit} bytes")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return problem(exc.status, exc.text or exc.reason)
    except BACKEND_UNAVAILABLE as exc:
        logger.warning("backend unavailable", extra={"error": type(exc).__name__})
        return problem(503, "the database or the queue is unavailable; try again")
    except Exception:
        logger.exception("internal error", extra={"path": request.path})
        return problem(500, "internal error")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in UNAUTHENTICATED_PATHS:
        return await handler(request)
    if not request.app[TOKENS_KEY].accepts(request.headers.get("Authorization")):
        return problem(401, "missing or invalid API token (Authorization: Bearer <token>)")
    return await handler(request)


async def _json_body(request: web.Request, model: type[M]) -> M:
    content_type = request.headers.get("Content-Type", "")
    if content_type and request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(
            text=f"Content-Type must be application/json, not {request.content_type}"
        )
    raw = await request.read()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidArgument.single("body", f"is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidArgument.single("body", "is nested too deeply") from None
    if not isinstance(data, dict):
        raise InvalidArgument.single("body", "must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidArgument(
            FieldViolation(_path(err["loc"]), _message(err)) for err in exc.errors()
        ) from None


def _path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "body"


def _message(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "is not a known field"
    if error["type"] == "missing":
        return "is required"
    return str(error["msg"]).replace("Input should be", "must be")


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def broadcast_json(report: BroadcastReport) -> dict[str, Any]:
    broadcast = report.broadcast
    return {
        "broadcast_id": broadcast.id,
        "status": broadcast.status.value,
        "total": broadcast.total,
        "sent": broadcast.sent,
        "failed": broadcast.failed,
        "pending": broadcast.pending,
        "message": broadcast.content.message,
        "media_type": broadcast.content.media_type.value,
        "media_url": broadcast.content.media_url or "",
        "parse_mode": broadcast.content.options.parse_mode or "",
        "created_at": _time(broadcast.created_at),
        "finished_at": _time(broadcast.finished_at),
        "error": broadcast.error,
        "outcome_counts": {state.value: n for state, n in report.outcome_counts.items()},
        "allow_paid_broadcast": broadcast.content.allow_paid_broadcast,
        "callback_url": broadcast.callback_url or "",
        **rest_lifecycle.broadcast_fields(broadcast),
    }


def user_json(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "language_code": user.language_code,
        "active": user.active,
        "created_at": _time(user.created_at),
        "updated_at": _time(user.updated_at),
        "tags": list(user.tags),
        "blocked_reason": user.blocked_reason,
        "blocked_at": _time(user.blocked_at),
    }


async def send_message(request: web.Request) -> web.Response:
    if request.content_type == "multipart/form-data":
        send = await _multipart_send(request)
    else:
        body = await _json_body(request, SendMessageBody)
        send = SendRequest(
            message=body.message or "",
            media_type=body.media_type or "",
            media_url=body.media_url or "",
            user_ids=tuple(body.user_ids or ()),
            all_users=body.all_users,
            filter=None if body.filter is None else body.filter.value(),
            allow_paid_broadcast=body.allow_paid_broadcast,
            callback_url=body.callback_url or "",
            **content_json.send_fields(body),
            **rest_lifecycle.send_options(
                request, idempotency_key=body.idempotency_key, send_at=body.send_at
            ),
        )
    return rest_lifecycle.accepted_response(await request.app[SERVICE_KEY].send_message(send))


_FORM_TEXT_FIELDS = frozenset(
    {"message", "media_type", "media_url", "user_ids", "all_users", "allow_paid_broadcast"}
    | {"callback_url"}
    | {"send_at", "idempotency_key"}
    | content_json.FORM_FIELDS
)


async def _multipart_send(request: web.Request) -> SendRequest:
    """``multipart/form-data``: the JSON body's fields as form fields (``user_ids`` a JSON
    array), and the file itself as the part ``media``."""
    limit = request.app[MAX_BODY_KEY]
    fields: dict[str, str] = {}
    data = b""
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
        if name == "media":
            data = await _read_part(part, budget, limit)
            filename = part.filename or ""
        elif name in _FORM_TEXT_FIELDS:
            raw = await _read_part(part, budget, limit)
            fields[name] = raw.decode("utf-8", errors="replace")
        else:
            violations.append(FieldViolation(name or "body", "is not a known field"))
            await _read_part(part, budget, limit)
    user_ids = _form_user_ids(fields.get("user_ids", ""), violations)
    all_users = _form_flag(fields, "all_users", violations)
    paid = _form_flag(fields, "allow_paid_broadcast", violations)
    content = content_json.form_fields(fields, violations)
    if violations:
        raise InvalidArgument(violations)
    return SendRequest(
        message=fields.get("message", ""),
        media_type=fields.get("media_type", ""),
        media_url=fields.get("media_url", ""),
        user_ids=user_ids,
        all_users=all_users,
        allow_paid_broadcast=paid,
        media_data=data,
        media_filename=filename,
        callback_url=fields.get("callback_url", ""),
        **content,
        **rest_lifecycle.send_options(
            request, idempotency_key=fields.get("idempotency_key"), send_at=fields.get("send_at")
        ),
    )


async def _read_part(part: BodyPartReader, budget: list[int], limit: int) -> bytes:
    """The part's bytes, counted against what the whole body may still hold."""
    chunks: list[bytes] = []
    while chunk := await part.read_chunk():
        budget[0] -= len(chunk)
        if budget[0] < 0:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=limit - budget[0])
        chunks.append(chunk)
    return b"".join(chunks)


def _form_user_ids(text: str, violations: list[FieldViolation]) -> tuple[int, ...]:
    if not text.strip():
        return ()
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        violations.append(FieldViolation("user_ids", "must be a JSON array of chat ids"))
        return ()
    return tuple(value)


def _form_flag(fields: dict[str, str], name: str, violations: list[FieldViolation]) -> bool:
    text = fields.get(name, "false").strip().lower()
    if text not in ("true", "false"):
        violations.append(FieldViolation(name, "must be true or false"))
    return text == "true"


def _id_param(request: web.Request, name: str) -> int:
    raw = request.match_info[name]
    try:
        value = int(raw)
    except ValueError:
        raise InvalidArgument.single(name, f"must be a whole number, not {raw!r}") from None
    if not 0 < value < 2**63:
        raise InvalidArgument.single(name, "must be a positive 64-bit number")
    return value


async def get_broadcast(request: web.Request) -> web.Response:
    broadcast_id = _id_param(request, "broadcast_id")
    return web.json_response(
        broadcast_json(await request.app[SERVICE_KEY].get_broadcast(broadcast_id))
    )


async def upsert_users(request: web.Request) -> web.Response:
    body = await _json_body(request, UpsertUsersBody)
    count = await request.app[SERVICE_KEY].upsert_users(
        [
            UserProfile(
                id=u.id,
                username=u.username,
                first_name=u.first_name,
                last_name=u.last_name,
                language_code=u.language_code,
                tags=tuple(u.tags),
            )
            for u in body.users
        ]
    )
    return web.json_response({"upserted": count})


async def list_users(request: web.Request) -> web.Response:
    """``?tag=..&tag=..`` (any of), ``?language_code=..`` (any of), ``?active_only=true``."""
    unknown = set(request.query) - {
        "page_size",
        "page_token",
        "tag",
        "language_code",
        "active_only",
    }
    if unknown:
        raise InvalidArgument(
            FieldViolation(name, "is not a known query parameter") for name in sorted(unknown)
        )
    raw_size = request.query.get("page_size", "0")
    try:
        page_size = int(raw_size)
    except ValueError:
        raise InvalidArgument.single(
            "page_size", f"must be a whole number, not {raw_size!r}"
        ) from None
    active_only = request.query.get("active_only", "false").strip().lower()
    if active_only not in ("true", "false"):
        raise InvalidArgument.single("active_only", "must be true or false")
    page = await request.app[SERVICE_KEY].list_users(
        page_size=page_size,
        page_token=request.query.get("page_token", ""),
        user_filter=UserFilter(
            tags=tuple(request.query.getall("tag", ())),
            language_codes=tuple(request.query.getall("language_code", ())),
        ),
        active_only=active_only == "true",
    )
    return web.json_response(
        {"users": [user_json(u) for u in page.users], "next_page_token": page.next_page_token}
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    body = await request.app[SERVICE_KEY].metrics_text()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(
    service: BroadcastingService,
    tokens: TokenCheck,
    *,
    max_body_bytes: int,
    sse_heartbeat: float = 15.0,
) -> web.Application:
    app = web.Application(
        client_max_size=max_body_bytes, middlewares=[errors_middleware, auth_middleware]
    )
    app[SERVICE_KEY] = service
    app[TOKENS_KEY] = tokens
    app[MAX_BODY_KEY] = max_body_bytes
    app.router.add_post("/send-message", send_message)
    app.router.add_post("/v1/broadcasts", send_message)
    app.router.add_get("/v1/broadcasts/{broadcast_id}", get_broadcast)
    app.router.add_post("/v1/users", upsert_users)
    app.router.add_get("/v1/users", list_users)
    rest_users.add_routes(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    openapi.add_routes(app)
    rest_reports.add_routes(app, heartbeat=sse_heartbeat)
    rest_content.add_routes(app)
    rest_lifecycle.add_routes(app)
    return app
