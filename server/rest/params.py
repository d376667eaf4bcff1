"""Reading a REST request: the service it is for, its path ids, query parameters and JSON
body, each refused with a 400 naming the offending parameter or field.

Every route refuses query parameters it does not know (:func:`check_query`) rather than
ignoring a misspelt filter. Violations name what the client sent: the path or query
parameter (``broadcast_id``, ``page_size``, ``tag[1]``) or the body field's path
(``album[0].media_url``).

Hostile input stops here with a 4xx, never a 5xx: numbers in paths and queries must be
canonical (:data:`CANONICAL_INTEGER`: ``+1``, ``1_0``, ``01``, `` 1``, fullwidth or
Arabic-Indic digits are refused, though Python's ``int()`` takes them all), a parameter that
is not a list is given once, a JSON body must say ``Content-Type: application/json`` (415
otherwise, also when absent) and is read by :mod:`.strict_json`. An error repeats at most
:data:`ECHO_LIMIT` characters of any request value (:func:`bounded`).
"""

from __future__ import annotations

import re
from typing import Any, Final, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from tgbroadcast.core.domain.errors import FieldViolation, InvalidArgument
from tgbroadcast.core.domain.recipients import INT64_MAX, INT64_MIN
from tgbroadcast.core.service.broadcasting import BroadcastingService
from tgbroadcast.server.rest import strict_json
from tgbroadcast.server.rest.strict_json import ECHO_LIMIT, echo

SERVICE_KEY: Final = web.AppKey("service", BroadcastingService)
MAX_BODY_KEY: Final = web.AppKey("max_body_bytes", int)
PAGE_PARAMETERS: Final = frozenset({"page_size", "page_token"})

M = TypeVar("M", bound=BaseModel)
CANONICAL_INTEGER: Final = re.compile(r"0|-?[1-9][0-9]*")
"""How a number in a path or query is written: ASCII digits, no leading zero, ``-`` for a
negative one."""
_INT64_DIGITS: Final = len(str(INT64_MAX))
_QUOTED: Final = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_MAX_MESSAGE: Final = 300
"""Characters of a violation's message kept: the fixed text and one echoed value fit."""


def service(request: web.Request) -> BroadcastingService:
    """The core the app serves (set by :func:`tgbroadcast.server.rest.app.create_app`)."""
    return request.app[SERVICE_KEY]


def check_query(request: web.Request, allowed: frozenset[str] = frozenset()) -> None:
    """Refuses query parameters a route does not know (400 naming each)."""
    unknown = set(request.query) - allowed
    if unknown:
        raise InvalidArgument(
            FieldViolation(echo(name), "is not a known query parameter") for name in sorted(unknown)
        )


def single(request: web.Request, name: str) -> str | None:
    """The query parameter ``name`` that is not a list: absent is None, twice a 400."""
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise InvalidArgument.single(name, "is given more than once")
    return values[0] if values else None


def flag(request: web.Request, name: str) -> bool:
    """A boolean query parameter: exactly ``true`` or ``false``; absent is false."""
    value = single(request, name)
    if value not in (None, "true", "false"):
        raise InvalidArgument.single(name, "must be true or false")
    return value == "true"


def renamed(exc: InvalidArgument, names: tuple[tuple[str, str], ...]) -> InvalidArgument:
    """``exc`` with the core's field names (``filter.tags[0]``) replaced by the route's query
    parameters (``tag[0]``): ``names`` holds (core prefix, parameter) pairs."""

    def rename(field: str) -> str:
        for core, parameter in names:
            if field == core or field.startswith(core + "["):
                return parameter + field.removeprefix(core)
        return field

    return InvalidArgument(FieldViolation(rename(v.field), v.description) for v in exc.violations)


def whole_number(name: str, raw: str) -> int:
    """``raw`` written as :data:`CANONICAL_INTEGER` and within 64 bits, else a 400 naming
    ``name``."""
    if not CANONICAL_INTEGER.fullmatch(raw):
        raise InvalidArgument.single(
            name,
            "must be a whole number in ASCII digits, without '+', spaces, separators or "
            f"leading zeros, not {echo(raw)!r}",
        )
    if len(raw.removeprefix("-")) > _INT64_DIGITS or not INT64_MIN <= int(raw) <= INT64_MAX:
        raise InvalidArgument.single(name, "must be a 64-bit number")
    return int(raw)


def path_id(request: web.Request, name: str) -> int:
    """A positive 64-bit id from the path (``broadcast_id``)."""
    value = whole_number(name, request.match_info[name])
    if value <= 0:
        raise InvalidArgument.single(name, "must be a positive 64-bit number")
    return value


def path_chat_id(request: web.Request, name: str) -> int:
    """A Telegram chat id from the path (``user_id``): any non-zero 64-bit number, as groups
    are negative."""
    value = whole_number(name, request.match_info[name])
    if value == 0:
        raise InvalidArgument.single(name, "must be a non-zero 64-bit number")
    return value


def page_size(request: web.Request) -> int:
    """``?page_size=``; absent is 0, the core's default size (the core checks the range)."""
    given = single(request, "page_size")
    return 0 if given is None else whole_number("page_size", given)


def page_token(request: web.Request) -> str:
    """``?page_token=``; absent is the first page (the core checks the token)."""
    return single(request, "page_token") or ""


def require_content_type(request: web.Request, *accepted: str) -> None:
    """415 unless the body is declared as one of ``accepted`` (an absent ``Content-Type`` is
    not guessed), in UTF-8 if a charset is given."""
    declared = request.headers.get("Content-Type")
    charset = (request.charset or "utf-8").lower()
    if declared is not None and request.content_type in accepted and charset in ("utf-8", "utf8"):
        return
    wanted = " or ".join(accepted)
    given = "none" if declared is None else repr(echo(declared))
    raise web.HTTPUnsupportedMediaType(text=f"Content-Type must be {wanted} (UTF-8), not {given}")


async def read_body(request: web.Request) -> bytearray:
    """The whole body, read once and not kept on the request (aiohttp's ``read()`` keeps a
    copy for the request's life: 11 MB of a million ids held until the 202); 413 beyond
    ``server.max_body_bytes`` as aiohttp's own reading does."""
    limit = request.app[MAX_BODY_KEY]
    # As aiohttp's own read(): the stream's buffer raised to the limit first, so a big body
    # is not read in turns of 64 KiB, the socket paused between them (0.3 s for a million ids).
    raise_buffer = getattr(request.content, "set_read_chunk_size", None)  # where aiohttp has it
    if limit and raise_buffer is not None:
        raise_buffer(limit)
    body = bytearray()
    while chunk := await request.content.readany():
        body += chunk
        if limit and len(body) > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(body))
    return body


async def json_body(request: web.Request, model: type[M]) -> M:
    """The body as ``model``: 415 for another content type, 400 naming each bad field."""
    require_content_type(request, "application/json")
    data = strict_json.loads(await read_body(request))
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
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{echo(part)}" if path else echo(part)
    return path or "body"


def _message(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "is not a known field"
    if error["type"] == "missing":
        return "is required"
    return str(error["msg"]).replace("Input should be", "must be")


def bounded(exc: InvalidArgument) -> InvalidArgument:
    """``exc`` repeating at most :data:`ECHO_LIMIT` characters of any request value: each
    quoted value in a message cut (see :func:`clipped`), each field path too, and at most
    :data:`~.strict_json.MAX_VIOLATIONS` violations."""
    return InvalidArgument(
        FieldViolation(echo(v.field), clipped(v.description))
        for v in exc.violations[: strict_json.MAX_VIOLATIONS]
    )


def clipped(text: str) -> str:
    """``text`` with each quoted value (``'...'``, ``"..."``: how messages repeat what was
    sent) cut to :data:`ECHO_LIMIT` characters, and the whole to :data:`_MAX_MESSAGE`."""

    def cut(match: re.Match[str]) -> str:
        quoted = match.group(0)
        if len(quoted) <= ECHO_LIMIT + 2:
            return quoted
        return quoted[: ECHO_LIMIT + 1] + "…" + quoted[-1]

    text = _QUOTED.sub(cut, text)
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + "…"
