"""REST route of the content area: ``POST /v1/preview``.

Body ``{"message": {...a SendMessage body...}, "user_id": N}`` (the message's audience
fields are ignored; its ``bot`` says whose user ``user_id`` is); answer
``{"text", "album_captions", "parse_mode"}``: the text (or caption) and album captions as
that user would receive them. 400 for an invalid message
(field paths start with ``message.``), 404 for a user the service does not know.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import ValidationError

from tgbroadcast.core.domain.errors import InvalidArgument
from tgbroadcast.core.rules.validation import SendRequest
from tgbroadcast.server.auth import bot_for
from tgbroadcast.server.rest import content, params


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/preview", preview_message)


async def preview_message(request: web.Request) -> web.Response:
    params.check_query(request)
    body = await params.json_body(request, content.PreviewBody)
    try:
        message = content.SendMessageBody.model_validate(body.message)
    except ValidationError as exc:
        raise InvalidArgument(params.violations(exc, prefix="message.")) from None
    send = SendRequest(
        message=message.message or "",
        media_type=message.media_type or "",
        media_url=message.media_url or "",
        allow_paid_broadcast=message.allow_paid_broadcast,
        **content.send_fields(message),
    )
    rendered = await params.service(request).preview_message(
        send, body.user_id, bot=bot_for(message.bot or "")
    )
    answer: dict[str, Any] = {
        "text": rendered.text,
        "album_captions": list(rendered.album_captions),
        "parse_mode": "" if rendered.parse_mode is None else rendered.parse_mode.value,
    }
    return web.json_response(answer)
