"""The bots routes (``/v1/bots``) and schemas of the OpenAPI document
(:mod:`tgbroadcast.server.rest.openapi`), kept beside it to keep each module readable."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tgbroadcast.server.rest.openapi_schemas import (
    Schema,
    array,
    int64,
    json_content,
    obj,
    ref,
    string,
    timestamp,
)

BOT_NAME_PATTERN = "^[a-z0-9_-]{1,32}$"
BOT_EXAMPLE: dict[str, Any] = {
    "name": "shop",
    "token": "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw",
    "rate_limit": 30,
}
_NAME_PARAMETER: Schema = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "The bot's name.",
    "schema": {"type": "string"},
}
_ADMIN = "Needs the scope `bots:admin`."


def bot_schemas() -> dict[str, Schema]:
    rate = {"type": "number", "minimum": 0.1}
    return {
        "CreateBotRequest": obj(
            {
                "name": string(
                    "Unique among configured and created bots.", pattern=BOT_NAME_PATTERN
                ),
                "token": string(
                    "The bot token from @BotFather: checked with getMe, stored encrypted with "
                    "`server.secret_key`, never returned.",
                    pattern="^[0-9]{1,18}:[A-Za-z0-9_-]{20,}$",
                    maxLength=256,
                ),
                "rate_limit": {
                    "type": ["number", "null"],
                    # 0 (the default) or at least 0.1.
                    "minimum": 0,
                    "not": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0.1},
                    "description": "Messages per second; absent, null or 0: `telegram.rate_limit`.",
                },
                "paid_rate_limit": {
                    "type": ["number", "null"],
                    # 0 (the default) or at least 0.1.
                    "minimum": 0,
                    "not": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0.1},
                    "description": "Messages per second of paid broadcasts; absent, null or 0: "
                    "`telegram.paid_rate_limit`.",
                },
                "api_url": {
                    "type": ["string", "null"],
                    "maxLength": 2048,
                    "pattern": "^(https?://[^/?#\\s]+[^\\s]*)?$",
                    "description": "The Bot API server (an http or https URL); absent, null or "
                    "empty: `telegram.api_url`.",
                },
            },
            required=("name", "token"),
        ),
        "Bot": obj(
            {
                "name": string(pattern=BOT_NAME_PATTERN),
                "bot_id": int64("Telegram's id of the bot (the token's leading digits)."),
                "username": string("As getMe answered it; empty for a configured bot."),
                "rate_limit": {**rate, "description": "Messages per second."},
                "paid_rate_limit": {**rate, "description": "Messages per second, paid."},
                "api_url": string("The Bot API server it talks to."),
                "source": string(
                    "`config` (`telegram.token`, `bots:`) or `api` (created here).",
                    enum=["config", "api"],
                ),
                "created_at": timestamp("When it was created here; null for a configured bot."),
            },
            required=(
                "name",
                "bot_id",
                "username",
                "rate_limit",
                "paid_rate_limit",
                "api_url",
                "source",
                "created_at",
            ),
            closed=False,
            description="A bot; never its token.",
        ),
        "BotList": obj(
            {"bots": array(ref("Bot"), "The bots this API token may use, by name.")},
            required=("bots",),
            closed=False,
        ),
    }


def bot_paths(errors: Callable[..., dict[str, Schema]]) -> dict[str, Schema]:
    """``errors(*statuses)``: the document's error answers."""
    return {
        "/v1/bots": {
            "post": {
                "operationId": "createBot",
                "summary": "Add a bot: its token checked with getMe and stored encrypted",
                "description": _ADMIN + " 400 names the field: `token` with Telegram's "
                "description when getMe fails, `api_url` when the Bot API cannot be reached. "
                "409: the name or the token is taken, or `server.secret_key` is not set. "
                "403: a name this API token may not use.",
                "tags": ["bots"],
                "requestBody": {
                    "required": True,
                    "content": json_content(ref("CreateBotRequest"), {"a bot": BOT_EXAMPLE}),
                },
                "responses": {
                    "201": {"description": "Created.", "content": json_content(ref("Bot"))},
                    **errors(400, 401, 409, 413, 415, 503),
                },
            },
            "get": {
                "operationId": "listBots",
                "summary": "The bots this API token may use",
                "description": _ADMIN,
                "tags": ["bots"],
                "responses": {
                    "200": {"description": "By name.", "content": json_content(ref("BotList"))},
                    **errors(400, 401, 503),
                },
            },
        },
        "/v1/bots/{name}": {
            "get": {
                "operationId": "getBot",
                "summary": "One bot",
                "description": _ADMIN + " 404 also for a bot this API token may not use.",
                "tags": ["bots"],
                "parameters": [_NAME_PARAMETER],
                "responses": {
                    "200": {"description": "The bot.", "content": json_content(ref("Bot"))},
                    **errors(400, 401, 404, 503),
                },
            },
            "delete": {
                "operationId": "deleteBot",
                "summary": "Remove a bot created here (its broadcasts and users stay)",
                "description": _ADMIN + " 409 while it has scheduled, queued, running or "
                "paused broadcasts, and for a bot configured in `bots:` or `telegram.token`.",
                "tags": ["bots"],
                "parameters": [_NAME_PARAMETER],
                "responses": {
                    "204": {"description": "Deleted."},
                    **errors(400, 401, 404, 409, 503),
                },
            },
        },
    }
