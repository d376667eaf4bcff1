"""Reading a REST request: the service it is for, its path ids, query parameters and JSON
body, each refused with a 400 naming the offending parameter or field.

Every route refuses query parameters it does not know (:func:`check_query`) rather than
ignoring a misspelt filter. Violations name what the client sent: the path or query
parameter (``broadcast_id``, ``page_size``, ``tag[1]``) or the body field's path
(``album[0].media_url``).
"""

from __future__ import annotations

import json
from typing import Any, Final, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from tgbroadcast.core.domain.errors import FieldViolation, InvalidArgument
from tgbroadcast.core.service.broadcasting import BroadcastingService

SERVICE_KEY: Final = web.AppKey("service", BroadcastingService)
MAX_BODY_KEY: Final = web.AppKey("max_body_bytes", int)
PAGE_PARAMETERS: Final = frozenset({"page_size", "page_token"})

M = TypeVar("M", bound=BaseModel)
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1


def service(request: web.Request) -> BroadcastingService:
    """The core the app serves (set by :func:`tgbroadcast.server.rest.app.create_app`)."""
    return request.app[SERVICE_KEY]


def check_query(request: web.Request, allowed: frozenset[str] = frozenset()) -> None:
    """Refuses query parameters a route does not know (400 naming each)."""
    unknown = set(request.query) - allowed
    if unknown:
        raise InvalidArgument(
            FieldViolation(name, "is not a known query parameter") for name in sorted(unknown)
        )


def renamed(exc: InvalidArgument, names: tuple[tuple[str, str], ...]) -> InvalidArgument:
    """``exc`` with the core's field names (``filter.tags[0]``) replaced by the route's query
    parameters (``tag[0]``): ``names`` holds (core prefix, parameter) pairs."""

    def rename(field: str) -> str:
        for core, parameter in names:
            if field == core or field.startswith(core + "["):
                return parameter + field.removeprefix(core)
        return field

    return InvalidArgument(FieldViolation(rename(v.field), v.description) for v in exc.violations)


def _whole_number(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise InvalidArgument.single(name, f"must be a whole number, not {raw!r}") from None


def path_id(request: web.Request, name: str) -> int:
    """A positive 64-bit id from the path (``broadcast_id``)."""
    value = _whole_number(name, request.match_info[name])
    if not 0 < value <= _INT64_MAX:
        raise InvalidArgument.single(name, "must be a positive 64-bit number")
    return value


def path_chat_id(request: web.Request, name: str) -> int:
    """A Telegram chat id from the path (``user_id``): any non-zero 64-bit number, as groups
    are negative."""
    value = _whole_number(name, request.match_info[name])
    if value == 0 or not _INT64_MIN <= value <= _INT64_MAX:
        raise InvalidArgument.single(name, "must be a non-zero 64-bit number")
    return value


def page_size(request: web.Request) -> int:
    """``?page_size=``; absent is 0, the core's default size (the core checks the range)."""
    return _whole_number("page_size", request.query.get("page_size", "0"))


def page_token(request: web.Request) -> str:
    """``?page_token=``; absent is the first page (the core checks the token)."""
    return request.query.get("page_token", "")


async def json_body(request: web.Request, model: type[M]) -> M:
    """The body as ``model``: 415 for another content type, 400 naming each bad field."""
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
        raise InvalidArgument(violations(exc)) from None


def violations(exc: ValidationError, *, prefix: str = "") -> list[FieldViolation]:
    """pydantic's errors as violations naming the field's path (``prefix`` before it)."""
    return [FieldViolation(prefix + _path(err["loc"]), _message(err)) for err in exc.errors()]


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
