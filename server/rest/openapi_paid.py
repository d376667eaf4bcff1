"""The OpenAPI document's part for paid broadcasts' Stars budget: ``max_stars`` on a send, and
the spend a broadcast reports."""

from __future__ import annotations

from tgbroadcast.core.rules.paid import MAX_STARS
from tgbroadcast.server.rest.openapi_schemas import Schema, timestamp

_MAX_STARS = (
    "A paid broadcast's Stars budget (only with `allow_paid_broadcast`): once the estimated "
    "spend of its paid sends reaches it, the rest is sent at the free rate (no Stars)."
)


def with_budgets(schemas: dict[str, Schema]) -> dict[str, Schema]:
    """``schemas`` with ``max_stars`` on the send's body and form, and the spend on
    ``Broadcast``."""
    schemas["SendMessageRequest"]["properties"]["max_stars"] = {
        "type": "integer",
        "minimum": 0,
        "maximum": MAX_STARS,
        "description": _MAX_STARS + " 0, or absent: no budget.",
    }
    schemas["SendMessageForm"]["properties"]["max_stars"] = {
        "type": "string",
        "pattern": "^[0-9]{1,10}$",
        "description": "As in the JSON body.",
    }
    schemas["Broadcast"]["properties"].update(
        {
            "max_stars": {"type": ["integer", "null"], "description": _MAX_STARS},
            "stars_spent_estimate": {
                "type": "number",
                "description": "Stars its paid sends are estimated to have cost: 0.1 Star per "
                "message above the free 30 per second, at the bot's paid rate.",
            },
            "paid_stopped_at": timestamp("When its paid sending stopped, the budget spent."),
        }
    )
    return schemas
