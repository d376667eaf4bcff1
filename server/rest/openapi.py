"""The REST contract as an OpenAPI 3.1 document, served without a token at ``GET /openapi.json``.

The document is built in code — the paths here, the schemas and examples in
:mod:`tgbroadcast.server.rest.openapi_schemas` — so the parts that must agree with the service
cannot drift: enum spellings come from the proto (``MEDIA_TYPE_PHOTO`` → ``"photo"``), and
``tests/test_openapi.py`` checks that it lists exactly the routes the aiohttp app serves, that it is
valid OpenAPI 3.1, that its request schemas have the fields the server's body models accept (and
admit ``null`` where a model takes it as absent: :mod:`~.openapi_nulls`), that
its examples match their schemas and are accepted by the server, and that real answers (JSON, SSE
events, problem+json errors) have the documented shapes.

REST conventions it describes: JSON field names are the proto's, ids are JSON numbers, enums
are lower-case short names, timestamps RFC 3339 strings, errors ``application/problem+json``.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from aiohttp import web

from tgbroadcast.server.rest import rendering
from tgbroadcast.server.rest.openapi_bots import bot_paths, bot_schemas
from tgbroadcast.server.rest.openapi_clicks import click_paths, with_extensions
from tgbroadcast.server.rest.openapi_examples import (
    BROADCAST_EXAMPLE,
    NOT_READY_EXAMPLE,
    PREVIEW_EXAMPLE,
    PROBLEM_EXAMPLE,
    SEND_EXAMPLES,
    SSE_EXAMPLE,
    USERS_EXAMPLE,
)
from tgbroadcast.server.rest.openapi_followups import followup_paths
from tgbroadcast.server.rest.openapi_live import live_paths
from tgbroadcast.server.rest.openapi_nulls import with_nulls
from tgbroadcast.server.rest.openapi_schemas import (
    BOT_PARAMETER,
    LANGUAGE_CODE_PATTERN,
    MAX_FILTER_VALUES,
    MAX_UPSERT_USERS,
    PAGE_SIZE,
    PAGE_TOKEN,
    TAG_PATTERN,
    Schema,
    chat_id,
    component_schemas,
    int64,
    json_content,
    obj,
    ref,
    string,
)
from tgbroadcast.server.rest.openapi_ui import ui_paths

OPENAPI_PATH = "/openapi.json"
PROBLEM_JSON = rendering.PROBLEM_JSON


def _errors(*statuses: int) -> dict[str, Schema]:
    """The error answers of an authenticated operation: ``statuses``, and on every one 403
    (the allow-list) and 429 (the limits)."""
    return _responses(*sorted({*statuses, 403, 429}))


def _responses(*statuses: int) -> dict[str, Schema]:
    return {
        str(status): {"$ref": f"#/components/responses/{_ERRORS[status][0]}"} for status in statuses
    }


_ERRORS: dict[int, tuple[str, str]] = {
    400: (
        "BadRequest",
        "Invalid input: `errors` names every offending field (a query parameter by its own "
        "name, e.g. `tag[0]`; an unknown one is refused, not ignored); nothing was written "
        "(a CSV import keeps the chunks before the bad line: see `imported`).",
    ),
    401: ("Unauthorized", "Missing or wrong API token (`Authorization: Bearer <token>`)."),
    403: ("Forbidden", "Address outside `server.allowed_networks`, or a scope or bot not granted."),
    404: ("NotFound", "No such broadcast (or one of a bot the token may not use) or user."),
    409: (
        "Conflict",
        "The broadcast's current state does not allow the move (the detail names the state), "
        "or an idempotency key was reused with a different request.",
    ),
    413: ("PayloadTooLarge", "The body is larger than `server.max_body_bytes`."),
    415: ("UnsupportedMediaType", "The body's Content-Type is not one this route accepts."),
    429: (
        "TooManyRequests",
        "A limit: this token's `server.requests_per_second`, too many failed authentications "
        "from this address, `server.max_pending_recipients` (a send) or `server.max_watchers` "
        "(an event stream). `Retry-After` says when to try again where it can be known.",
    ),
    503: ("Unavailable", "The database or the queue is unavailable; try again."),
}
_HEADERS: dict[int, Schema] = {
    401: {
        "WWW-Authenticate": {
            "schema": {"type": "string"},
            "description": 'Bearer realm="tgbroadcast"',
        }
    },
    429: {
        "Retry-After": {
            "schema": {"type": "integer", "minimum": 1},
            "description": "Seconds to wait before trying again.",
        }
    },
}


def _id_parameter(name: str, description: str, schema: Schema) -> Schema:
    """A path id: written as a canonical number (ASCII digits, no ``+``, no leading zero),
    anything else is a 400 naming the parameter."""
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


def _list_parameter(name: str, items: Schema, description: str, **extra: Any) -> Schema:
    return {
        "name": name,
        "in": "query",
        "description": description,
        "style": "form",
        "explode": True,
        "schema": {"type": "array", "items": items, **extra},
    }


def _send_operation(operation_id: str, summary: str) -> Schema:
    return {
        "operationId": operation_id,
        "summary": summary,
        "description": "Stores the broadcast and queues it; delivery happens in the workers. "
        "A replay (same idempotency key, same request) answers 202 with the first "
        "broadcast and `replayed: true`.",
        "tags": ["broadcasts"],
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "description": "Instead of the body's `idempotency_key`.",
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            }
        ],
        "requestBody": {
            "required": True,
            "content": {
                **json_content(ref("SendMessageRequest"), SEND_EXAMPLES),
                "multipart/form-data": {
                    "schema": ref("SendMessageForm"),
                    "encoding": {"media": {"contentType": "application/octet-stream"}},
                },
            },
        },
        "responses": {
            "202": {
                "description": "Stored and queued (or scheduled).",
                "headers": {
                    "Location": {
                        "description": "`/v1/broadcasts/{broadcast_id}`",
                        "schema": {"type": "string"},
                    }
                },
                "content": json_content(
                    ref("SendMessageResponse"),
                    {"queued": {"broadcast_id": 1, "status": "queued", "total": 3}},
                ),
            },
            **_errors(400, 401, 409, 413, 415, 503),
        },
    }


def _lifecycle(operation_id: str, summary: str) -> Schema:
    return {
        "post": {
            "operationId": operation_id,
            "summary": summary,
            "tags": ["broadcasts"],
            "parameters": [{"$ref": "#/components/parameters/BroadcastId"}],
            "responses": {
                "200": {
                    "description": "The broadcast after the move.",
                    "content": json_content(ref("Broadcast")),
                },
                **_errors(400, 401, 404, 409, 503),
            },
        }
    }


def _readiness(operation_id: str, *, deprecated: bool) -> Schema:
    """``/readyz``, and ``/healthz``: the same probe under its old name."""
    old_name = "The old name of `/readyz`, answering exactly as it does. " if deprecated else ""
    not_ready = {PROBLEM_JSON: {"schema": ref("NotReady"), "example": NOT_READY_EXAMPLE}}
    return {
        "get": {
            "operationId": operation_id,
            "summary": "Readiness: the database and NATS answer, the process is not draining",
            "description": old_name + "Send traffic here only while this answers 200.",
            "tags": ["service"],
            "security": [],
            **({"deprecated": True} if deprecated else {}),
            "responses": {
                "200": {
                    "description": "Ready.",
                    "content": json_content(ref("Ready"), {"ready": {"status": "ready"}}),
                },
                "503": {
                    "description": "Not ready: `checks` gives each check's result, "
                    "`detail` names the failing ones.",
                    "content": not_ready,
                },
            },
        }
    }


def _paths() -> dict[str, Schema]:
    broadcast_id = {"$ref": "#/components/parameters/BroadcastId"}
    user_id = {"$ref": "#/components/parameters/UserId"}
    bot = {"$ref": "#/components/parameters/Bot"}
    outcome_filter = _list_parameter(
        "outcome", ref("DeliveryOutcome"), "Only these outcomes (repeat the parameter)."
    )
    return {
        "/send-message": {"post": _send_operation("sendMessage", "Send a broadcast")},
        "/v1/broadcasts": {
            "post": _send_operation("createBroadcast", "Send a broadcast (same as /send-message)"),
            "get": {
                "operationId": "listBroadcasts",
                "summary": "List broadcasts, newest first",
                "tags": ["broadcasts"],
                "parameters": [
                    _list_parameter(
                        "status",
                        ref("BroadcastStatus"),
                        "Only these states (repeat it, or separate them with commas).",
                    ),
                    bot,
                    PAGE_SIZE,
                    PAGE_TOKEN,
                ],
                "responses": {
                    "200": {
                        "description": "One page.",
                        "content": json_content(ref("BroadcastList")),
                    },
                    **_errors(400, 401, 503),
                },
            },
        },
        "/v1/broadcasts/{broadcast_id}": {
            "get": {
                "operationId": "getBroadcast",
                "summary": "A broadcast's state and counters",
                "tags": ["broadcasts"],
                "parameters": [broadcast_id],
                "responses": {
                    "200": {
                        "description": "The broadcast.",
                        "content": json_content(ref("Broadcast"), {"completed": BROADCAST_EXAMPLE}),
                    },
                    **_errors(400, 401, 404, 503),
                },
            }
        },
        "/v1/broadcasts/{broadcast_id}/cancel": _lifecycle(
            "cancelBroadcast", "Stop a broadcast for good (never-attempted recipients stay pending)"
        ),
        "/v1/broadcasts/{broadcast_id}/pause": _lifecycle(
            "pauseBroadcast", "Hold a queued or running broadcast"
        ),
        "/v1/broadcasts/{broadcast_id}/resume": _lifecycle(
            "resumeBroadcast", "Continue a paused broadcast where it stopped"
        ),
        **followup_paths(_errors),
        "/v1/broadcasts/{broadcast_id}/events": {
            "get": {
                "operationId": "watchBroadcast",
                "summary": "Every recipient's outcome as Server-Sent Events",
                "description": "First the outcomes already known, then live ones, exactly once "
                "each: an `event: result` per recipient (`data`: a `ResultEvent`, `id`: its "
                "position) — of a recalled (edited) broadcast, an `event: recall` (`edit`) per "
                "sent recipient too (the same data with `recall` (`edit`) set) — then one "
                "`event: end` (`data`: an "
                "`EndEvent`, `id: end`) with the final status, and the stream ends. Comment "
                "lines (`: heartbeat`) keep the connection open; `event: error` means the "
                "stream stopped and the client should reconnect; `event: shutdown` means the "
                "server is draining: reconnect (to another instance). A reconnect with "
                "`Last-Event-ID` resumes after that event.",
                "tags": ["broadcasts"],
                "parameters": [
                    broadcast_id,
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "description": "The `id` of the last event received: the stream "
                        "resumes after it (in the same order, each outcome once); `end` after "
                        "the closing event: answered 204.",
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "The event stream.",
                        "content": {
                            "text/event-stream": {
                                "schema": {"type": "string"},
                                "example": SSE_EXAMPLE,
                            }
                        },
                    },
                    "204": {"description": "`Last-Event-ID: end`: nothing more to send."},
                    **_errors(400, 401, 404, 503),
                },
            }
        },
        "/v1/broadcasts/{broadcast_id}/deliveries": {
            "get": {
                "operationId": "listDeliveries",
                "summary": "A broadcast's recipients and their outcomes, by user id",
                "tags": ["reports"],
                "parameters": [broadcast_id, outcome_filter, PAGE_SIZE, PAGE_TOKEN],
                "responses": {
                    "200": {
                        "description": "One page.",
                        "content": json_content(ref("DeliveryList")),
                    },
                    **_errors(400, 401, 404, 503),
                },
            }
        },
        "/v1/broadcasts/{broadcast_id}/deliveries.csv": {
            "get": {
                "operationId": "exportDeliveries",
                "summary": "Every recipient and outcome as CSV, streamed",
                "tags": ["reports"],
                "parameters": [broadcast_id, outcome_filter],
                "responses": {
                    "200": {
                        "description": "A header row, then one row per recipient.",
                        "content": {"text/csv": {"schema": {"type": "string"}}},
                    },
                    **_errors(400, 401, 404, 503),
                },
            }
        },
        "/v1/preview": {
            "post": {
                "operationId": "previewMessage",
                "summary": "Render a message for one user without sending anything",
                "tags": ["broadcasts"],
                "requestBody": {
                    "required": True,
                    "content": json_content(
                        ref("PreviewRequest"), {"personalized": PREVIEW_EXAMPLE}
                    ),
                },
                "responses": {
                    "200": {
                        "description": "The rendering.",
                        "content": json_content(ref("PreviewResponse")),
                    },
                    **_errors(400, 401, 404, 413, 415, 503),
                },
            }
        },
        "/v1/users": {
            "post": {
                "operationId": "upsertUsers",
                "summary": f"Create or update up to {MAX_UPSERT_USERS:,} users by id",
                "tags": ["users"],
                "requestBody": {
                    "required": True,
                    "content": json_content(
                        ref("UpsertUsersRequest"), {"two users": USERS_EXAMPLE}
                    ),
                },
                "responses": {
                    "200": {
                        "description": "Users created or updated.",
                        "content": json_content(
                            obj({"upserted": int64()}, required=("upserted",), closed=False)
                        ),
                    },
                    **_errors(400, 401, 413, 415, 503),
                },
            },
            "get": {
                "operationId": "listUsers",
                "summary": "List users, by id",
                "tags": ["users"],
                "parameters": [
                    _list_parameter(
                        "tag",
                        string(pattern=TAG_PATTERN),
                        "Users having one of these tags.",
                        maxItems=MAX_FILTER_VALUES,
                    ),
                    _list_parameter(
                        "language_code",
                        string(pattern=LANGUAGE_CODE_PATTERN),
                        "Users with one of these language codes.",
                        maxItems=MAX_FILTER_VALUES,
                    ),
                    {
                        "name": "active_only",
                        "in": "query",
                        "description": "Leave out inactive users.",
                        "schema": {"type": "boolean", "default": False},
                    },
                    bot,
                    PAGE_SIZE,
                    PAGE_TOKEN,
                ],
                "responses": {
                    "200": {"description": "One page.", "content": json_content(ref("UserList"))},
                    **_errors(400, 401, 503),
                },
            },
        },
        "/v1/users/import": {
            "post": {
                "operationId": "importUsers",
                "summary": "Upsert users from CSV, streamed in chunks",
                "description": "Header row `id,username,first_name,last_name,language_code,"
                "tags` (tags separated by spaces). Each chunk is committed as it arrives.",
                "tags": ["users"],
                "parameters": [bot],
                "requestBody": {
                    "required": True,
                    "content": {
                        "text/csv": {
                            "schema": {"type": "string"},
                            "example": "id,username,first_name,last_name,language_code,tags\n"
                            "111,alice,Alice,,en,vip beta\n222,,Bob,Smith,de,\n",
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "Users created or updated over all chunks.",
                        "content": json_content(
                            obj({"imported": int64()}, required=("imported",), closed=False)
                        ),
                    },
                    **_errors(400, 401, 413, 415, 503),
                },
            }
        },
        "/v1/users/{user_id}": {
            "get": {
                "operationId": "getUser",
                "summary": "One user",
                "tags": ["users"],
                "parameters": [user_id, bot],
                "responses": {
                    "200": {"description": "The user.", "content": json_content(ref("User"))},
                    **_errors(400, 401, 404, 503),
                },
            },
            "delete": {
                "operationId": "deleteUser",
                "summary": "Forget a user (past deliveries to it are kept)",
                "tags": ["users"],
                "parameters": [user_id, bot],
                "responses": {
                    "204": {"description": "Deleted."},
                    **_errors(400, 401, 404, 503),
                },
            },
        },
        **bot_paths(_errors),
        OPENAPI_PATH: {
            "get": {
                "operationId": "getOpenApi",
                "summary": "This document",
                "tags": ["service"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1.",
                        "content": json_content({"type": "object"}),
                    },
                    **_responses(403),
                },
            }
        },
        "/livez": {
            "get": {
                "operationId": "livez",
                "summary": "Liveness: the process's event loop answers",
                "description": "Restart the process only when this fails.",
                "tags": ["service"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "Live.",
                        "content": json_content(ref("Live"), {"live": {"status": "live"}}),
                    }
                },
            }
        },
        "/readyz": _readiness("readyz", deprecated=False),
        "/healthz": _readiness("healthz", deprecated=True),
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics",
                "tags": ["service"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "Prometheus text format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_responses(403),
                },
            }
        },
    }


@cache
def _built() -> str:
    return json.dumps(
        {
            "openapi": "3.1.0",
            "info": {
                "title": "Telegram Broadcast Service",
                "version": "1",
                "description": "The REST bridge over the gRPC `tgbroadcast.v1.BroadcastService`. "
                "JSON field names are the proto's; enums are lower-case short names; "
                "timestamps RFC 3339; errors `application/problem+json` (RFC 9457).",
            },
            "servers": [{"url": "/"}],
            "security": [{"bearer": []}],
            "tags": [{"name": n} for n in ("broadcasts", "reports", "users", "bots", "service")],
            "paths": live_paths(click_paths(ui_paths(_paths(), _errors)), _errors),
            "components": {
                "securitySchemes": {
                    "bearer": {
                        "type": "http",
                        "scheme": "bearer",
                        "description": "One of `server.api_tokens`.",
                    }
                },
                "parameters": {
                    "BroadcastId": _id_parameter(
                        "broadcast_id", "The broadcast's id.", int64(minimum=1)
                    ),
                    "UserId": _id_parameter(
                        "user_id", "The Telegram user id (negative for groups).", chat_id("")
                    ),
                    "Bot": BOT_PARAMETER,
                },
                "responses": {
                    name: {
                        "description": description,
                        "content": {
                            PROBLEM_JSON: {
                                "schema": ref("Problem"),
                                **({"example": PROBLEM_EXAMPLE} if status == 400 else {}),
                            }
                        },
                        **({"headers": _HEADERS[status]} if status in _HEADERS else {}),
                    }
                    for status, (name, description) in _ERRORS.items()
                },
                "schemas": with_nulls(with_extensions({**component_schemas(), **bot_schemas()})),
            },
        },
        indent=1,
    )


def document() -> dict[str, Any]:
    """The OpenAPI document (a fresh copy: callers may change it)."""
    loaded: dict[str, Any] = json.loads(_built())
    return loaded


async def serve_openapi(request: web.Request) -> web.Response:
    return web.Response(text=_built(), content_type="application/json")


def add_routes(app: web.Application) -> None:
    """``GET /openapi.json``; the auth middleware lets it through without a token."""
    app.router.add_get(OPENAPI_PATH, serve_openapi)
