"""The Bot API's answer envelope, and the failures that fill it.

Every answer the simulator gives to a Bot API route is one :class:`Answer`. A JSON answer is
``{"ok": true, "result": ...}`` or ``{"ok": false, "error_code": N, "description": "...",
"parameters": {...}}`` with the HTTP status equal to ``error_code``, exactly as
api.telegram.org answers. Fault injection can also produce a non-JSON answer (an HTML 502
page) or a delayed one (a hang).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

JSON_CONTENT_TYPE = "application/json"
HTML_CONTENT_TYPE = "text/html"

BAD_GATEWAY_PAGE = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.18.0</center>\r\n"
    "</body>\r\n</html>\r\n"
)
"""What api.telegram.org's front end answers when the Bot API server behind it is down."""


class BotApiError(Exception):
    """A Bot API call refused with Telegram's ``error_code`` and ``description``.

    ``parameters`` is the ResponseParameters object (``retry_after``, ``migrate_to_chat_id``),
    omitted from the envelope when empty.
    """

    def __init__(
        self, error_code: int, description: str, parameters: Mapping[str, int] | None = None
    ) -> None:
        super().__init__(description)
        self.error_code = error_code
        self.description = description
        self.parameters: dict[str, int] = dict(parameters or {})


def bad_request(text: str) -> BotApiError:
    """400 ``Bad Request: <text>``."""
    return BotApiError(400, f"Bad Request: {text}")


def forbidden(text: str) -> BotApiError:
    """403 ``Forbidden: <text>``."""
    return BotApiError(403, f"Forbidden: {text}")


def too_many_requests(retry_after: int) -> BotApiError:
    """429 with ``parameters.retry_after``, as Telegram's flood control answers."""
    return BotApiError(
        429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after}
    )


UNAUTHORIZED = BotApiError(401, "Unauthorized")
NOT_FOUND = BotApiError(404, "Not Found")


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    """One HTTP answer to a Bot API route.

    ``hang`` > 0 means: hold the request that many seconds (or until the simulator closes)
    before answering, which a client with a shorter timeout sees as a timeout.
    ``error_code`` is ``None`` for a successful answer.
    """

    status: int
    body: bytes
    content_type: str = JSON_CONTENT_TYPE
    error_code: int | None = None
    description: str | None = None
    result: Any = None
    hang: float = 0.0

    @classmethod
    def ok(cls, result: Any) -> Answer:
        body = json.dumps({"ok": True, "result": result}, ensure_ascii=False)
        return cls(status=200, body=body.encode(), result=result)

    @classmethod
    def failure(cls, failure: BotApiError, *, hang: float = 0.0) -> Answer:
        envelope: dict[str, Any] = {
            "ok": False,
            "error_code": failure.error_code,
            "description": failure.description,
        }
        if failure.parameters:
            envelope["parameters"] = failure.parameters
        return cls(
            status=failure.error_code,
            body=json.dumps(envelope, ensure_ascii=False).encode(),
            error_code=failure.error_code,
            description=failure.description,
            hang=hang,
        )

    @classmethod
    def html(cls, status: int, page: str) -> Answer:
        return cls(
            status=status,
            body=page.encode(),
            content_type=HTML_CONTENT_TYPE,
            error_code=status,
            description=f"HTML page ({status})",
        )
