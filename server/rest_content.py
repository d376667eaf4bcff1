"""REST route of the content area: ``POST /v1/preview``.

Body ``{"message": {...a SendMessage body...}, "user_id": N}`` (the message's audience
fields are ignored); answer ``{"text", "album_captions", "parse_mode"}``: the text (or
caption) and album captions as that user would receive them. 400 for an invalid message
(field paths start with ``message.``), 404 for a user the service does not know.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import ValidationError

from broadcasting.errors import FieldViolation, InvalidArgument
from broadcasting.validation import SendRequest
from server import content_json, http_api


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/preview", preview_message)


async def preview_message(request: web.Request) -> web.Response:
    body = await http_api._json_body(request, content_json.PreviewBody)
    try:
        message = http_api.SendMessageBody.model_validate(body.message)
    except ValidationError as exc:
        raise InvalidArgument(
            FieldViolation("message." + http_api._path(err["loc"]), http_api._message(err))
            for err in exc.errors()
        ) from None
    send = SendRequest(
        message=message.message or "",
        media_type=message.media_type or "",
        media_url=message.media_url or "",
        allow_paid_broadcast=message.allow_paid_broadcast,
        **content_json.send_fields(message),
    )
    rendered = await request.app[http_api.SERVICE_KEY].preview_message(send, body.user_id)
    answer: dict[str, Any] = {
        "text": rendered.text,
        "album_captions": list(rendered.album_captions),
        "parse_mode": "" if rendered.parse_mode is None else rendered.parse_mode.value,
    }
    return web.json_response(answer)
