"""The OpenAPI document's part for the dashboard: ``GET /v1/token`` (what the calling token may
do) and ``GET /ui/{path}`` (the dashboard's static files, served without a token)."""

from __future__ import annotations

from collections.abc import Callable

from tgbroadcast.server.rest.openapi_schemas import Schema, json_content, obj, string
from tgbroadcast.server.rest.token_info import TOKEN_PATH
from tgbroadcast.server.ui import routes as ui

_BOT_LIMIT = obj(
    {
        "name": string("The bot's name."),
        "rate_limit": {"type": "number", "description": "Messages per second it sends at."},
        "paid_rate_limit": {
            "type": "number",
            "description": "Messages per second of its paid broadcasts.",
        },
    },
    required=("name", "rate_limit", "paid_rate_limit"),
)
TOKEN_ANSWER = obj(
    {
        "name": string("The token's configured name (never the token)."),
        "scopes": {
            "type": "array",
            "items": string(),
            "description": "What it may do, sorted (`broadcasts:send`, `users:read`, ...).",
        },
        "bots": {
            "type": "array",
            "items": string(),
            "description": 'The bots it may use as configured; `["*"]`: every bot.',
        },
        "bot_limits": {
            "type": "array",
            "items": _BOT_LIMIT,
            "description": "The bots it may use that the service knows, by name, with their "
            "sending rates (empty on a server that manages no bots).",
        },
    },
    required=("name", "scopes", "bots", "bot_limits"),
)
TOKEN_EXAMPLE = {
    "name": "dashboard",
    "scopes": ["broadcasts:control", "broadcasts:read", "broadcasts:send"],
    "bots": ["*"],
    "bot_limits": [{"name": "default", "rate_limit": 30.0, "paid_rate_limit": 1000.0}],
}


def _files() -> list[str]:
    return sorted(ui.load())


def _types() -> list[str]:
    """The content types of the files (``text/html``, ``text/javascript``, ...)."""
    return sorted({found.content_type for found in ui.load().values()})


def ui_paths(
    paths: dict[str, Schema], errors: Callable[..., dict[str, Schema]]
) -> dict[str, Schema]:
    """``paths`` with the token route and the dashboard's files; ``errors(*statuses)``: the
    document's error answers."""
    text = {"schema": {"type": "string"}}
    paths[TOKEN_PATH] = {
        "get": {
            "operationId": "describeToken",
            "summary": "What the calling API token may do: its name, scopes and bots",
            "description": "Any valid token may ask (no scope needed); the answer describes "
            "that token only, never the token itself. The dashboard shows only what it allows.",
            "tags": ["service"],
            "responses": {
                "200": {
                    "description": "The calling token's grants.",
                    "content": json_content(TOKEN_ANSWER, {"dashboard": TOKEN_EXAMPLE}),
                },
                **errors(400, 401, 503),
            },
        }
    }
    paths[ui.ROUTE] = {
        "get": {
            "operationId": "dashboardFile",
            "summary": "The dashboard: its page (`/ui/`) and the files it loads",
            "description": "Static files carrying no data, so no token is needed (the network "
            "allow-list applies). Served with a strict Content-Security-Policy and an `ETag`; "
            "`If-None-Match` with it is answered 304. `/ui/` is `index.html`.",
            "tags": ["service"],
            "security": [],
            "parameters": [
                {
                    "name": "path",
                    "in": "path",
                    "required": True,
                    "description": "A file of the dashboard.",
                    "schema": string(enum=_files()),
                }
            ],
            "responses": {
                "200": {
                    "description": "The file.",
                    "content": dict.fromkeys(_types(), text),
                },
                "304": {"description": "Not modified (`If-None-Match`)."},
                **errors(404),
            },
        }
    }
    return paths
