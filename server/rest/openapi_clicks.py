"""The OpenAPI document's part for click tracking: ``track_clicks`` on a send, the clicks a
broadcast, its variants and its deliveries report, the stream's ``click`` events, and the
public ``GET /c/{code}``."""

from __future__ import annotations

from tgbroadcast.server.rest.openapi_followups import with_followups
from tgbroadcast.server.rest.openapi_paid import with_budgets
from tgbroadcast.server.rest.openapi_schemas import Schema, array, int64, obj, string
from tgbroadcast.server.rest.openapi_variants import with_variants

_TRACK = (
    "Lead every recipient's links — URL buttons, and text links (also those written in HTML "
    "or MarkdownV2) — through the service: each becomes `{server.public_url}/c/{code}`, a code "
    "of the recipient and link that answers 302 to the original and counts the recipient's "
    "first click on it. Needs `server.public_url` (400 without it). Album captions and link "
    "previews are not rewritten."
)


def with_clicks(schemas: dict[str, Schema]) -> dict[str, Schema]:
    """``schemas`` with ``track_clicks`` on the send's body and form, ``LinkClicks``, and the
    clicks of ``Broadcast``, ``VariantReport`` and ``DeliveryResult``."""
    schemas["SendMessageRequest"]["properties"]["track_clicks"] = {
        "type": "boolean",
        "description": _TRACK,
    }
    schemas["SendMessageForm"]["properties"]["track_clicks"] = string(enum=["true", "false"])
    schemas["LinkClicks"] = obj(
        {
            "variant": {"type": ["string", "null"], "description": "Null without variants."},
            "link": {
                "type": "integer",
                "description": "Its position among the message's links: URL buttons row by "
                "row, then the text's links in order.",
            },
            "url": string("Where it leads (a personalized URL as for a user without values)."),
            "clicks": int64("Recipients who opened it."),
        },
        required=("variant", "link", "url", "clicks"),
        closed=False,
        description="One tracked link of the broadcast's message and its unique clicks.",
    )
    schemas["Broadcast"]["properties"].update(
        {
            "track_clicks": {"type": "boolean", "description": "Whether its links are tracked."},
            "clicks": int64("Unique clicks: recipients' first clicks on each link."),
            "clickers": int64("Recipients who opened at least one link."),
            "link_clicks": array(
                {"$ref": "#/components/schemas/LinkClicks"},
                "Every tracked link, variant by variant, with its unique clicks (filled by "
                "`GET /v1/broadcasts/{id}`).",
            ),
        }
    )
    schemas["VariantReport"]["properties"]["clicks"] = int64(
        "Unique clicks on its recipients' tracked links."
    )
    schemas["DeliveryResult"]["properties"].update(
        {
            "clicks": {
                "type": "integer",
                "description": "Tracked links of its message the recipient opened.",
            },
            "click": string(
                "In the SSE stream's `click` event only: the link the recipient opened, for "
                "the first time."
            ),
        }
    )
    return schemas


def with_extensions(schemas: dict[str, Schema]) -> dict[str, Schema]:
    """``schemas`` with every feature's part: follow-ups, budgets, variants and clicks."""
    return with_clicks(with_variants(with_budgets(with_followups(schemas))))


def click_paths(paths: dict[str, Schema]) -> dict[str, Schema]:
    """``paths`` with ``GET /c/{code}`` (served to anyone: no 401, 403 or 429)."""
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    answers = {
        "404": {"description": "No link behind this code.", "content": problem},
        "410": {
            "description": "The broadcast is older than `tracking.retention_days`.",
            "content": problem,
        },
    }
    paths["/c/{code}"] = {
        "get": {
            "operationId": "openTrackedLink",
            "summary": "Open a tracked link (what recipients' browsers open)",
            "description": "Answers 302 to the link the code stands for, and counts the "
            "recipient's first click on it. No token, and served whatever "
            "`server.allowed_networks` says. 404 for a code the service did not make (or a "
            "link an edit removed), 410 past `tracking.retention_days`.",
            "tags": ["service"],
            "security": [],
            "parameters": [
                {"name": "code", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "302": {
                    "description": "To the original link.",
                    "headers": {"Location": {"schema": {"type": "string", "format": "uri"}}},
                },
                **answers,
            },
        }
    }
    return paths
