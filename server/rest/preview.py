"""REST route of the content area: ``POST /v1/preview``.

Body ``{"message": {...a SendMessage body...}, "user_id": N}`` (the message's audience
fields are ignored; its ``bot`` says whose user ``user_id`` is), or ``{"broadcast_id": B,
"user_id": N}`` for a stored broadcast's latest content; ``"variant"`` names the variant to
show (default: the user's). Answer ``{"text", "album_captions", "parse_mode"}`` (and
``"variant"`` with variants): the text (or caption) and album captions as that user would
receive them. 400 for an invalid message (field paths start with ``message.``), 404 for a
user or broadcast the service does not know.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import ValidationError

from tgbroadcast.core.domain.access import DEFAULT_BOT
from tgbroadcast.core.domain.errors import FieldViolation, InvalidArgument
from tgbroadcast.core.rules.validation import SendRequest
from tgbroadcast.server.auth import bot_for, visible_bots
from tgbroadcast.server.rest import content, params


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/preview", preview_message)


async def preview_message(request: web.Request) -> web.Response:
    params.check_query(request)
    body = await params.json_body(request, content.PreviewBody)
    send, bot = None, DEFAULT_BOT
    if body.message is not None:
        try:
            message = content.SendMessageBody.model_validate(body.message)
        except ValidationError as exc:
            raise InvalidArgument(params.violations(exc, prefix="message.")) from None
        try:
            variants = content.variant_inputs(message.variants)
            fields = content.send_fields(message)
        except InvalidArgument as exc:
            raise InvalidArgument(
                FieldViolation(f"message.{v.field}", v.description) for v in exc.violations
            ) from None
        send = SendRequest(
            message=message.message or "",
            media_type=message.media_type or "",
            media_url=message.media_url or "",
            allow_paid_broadcast=message.allow_paid_broadcast,
            variants=variants,
            **fields,
        )
        bot = bot_for(message.bot or "")
    rendered = await params.service(request).preview_message(
        send,
        body.user_id,
        bot=bot,
        broadcast_id=body.broadcast_id,
        variant=body.variant,
        visible=visible_bots(),
    )
    answer: dict[str, Any] = {
        "text": rendered.text,
        "album_captions": list(rendered.album_captions),
        "parse_mode": "" if rendered.parse_mode is None else rendered.parse_mode.value,
    }
    if rendered.variant is not None:
        answer["variant"] = rendered.variant
    return web.json_response(answer)
