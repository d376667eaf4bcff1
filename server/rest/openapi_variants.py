"""The OpenAPI document's part for variants: ``variants`` on a send (JSON and form), each
broadcast's variants with their counts, each delivery's variant, and a preview by broadcast
or variant."""

from __future__ import annotations

from tgbroadcast.core.rules.variants import (
    CONTENT_FIELDS,
    MAX_LANGUAGE_CODES,
    MAX_VARIANTS,
    MAX_WEIGHT,
    MIN_VARIANTS,
    NAME_RULE,
)
from tgbroadcast.server.rest.openapi_schemas import Schema, array, int64, obj, ref, string

_REFUSED_STATES = ("forward", "bot_deleted", "variants")
"""409 ``state`` values that are not a broadcast status."""
_NAME = string(NAME_RULE + ", distinct (ignoring case).", pattern="^[A-Za-z0-9_-]{1,32}$")
_WEIGHT = (
    "Among the variants a user may get, the share of users getting this one is its weight "
    "over theirs (0 means 1)."
)
_LANGUAGES = (
    "A user whose `language_code` is one of these (compared lower-cased; `pt` also matches "
    "`pt-br`) gets this variant. Users matching none get one of the variants without "
    "language codes: at least one variant must have none."
)
_VARIANTS = (
    f"{MIN_VARIANTS} to {MAX_VARIANTS} contents instead of one (A/B/n tests, languages): each "
    "recipient gets one, chosen by `language_codes` and `weight`, the same one on every retry "
    "(a hash of the broadcast's and the user's ids). The top-level content fields must then be "
    "empty; the other fields apply to every variant. A broadcast with variants cannot be "
    "edited (409 `state: variants`)."
)


def with_variants(schemas: dict[str, Schema]) -> dict[str, Schema]:
    """``schemas`` with ``Variant`` and ``VariantReport``, ``variants`` on the send's body and
    form and on ``Broadcast``, ``variant`` on ``DeliveryResult`` and the preview's."""
    send = schemas["SendMessageRequest"]["properties"]
    schemas["Variant"] = obj(
        {
            "name": _NAME,
            "weight": {"type": "integer", "minimum": 0, "maximum": MAX_WEIGHT},
            "language_codes": array(
                string(pattern="^[A-Za-z0-9_-]{1,35}$"), _LANGUAGES, maxItems=MAX_LANGUAGE_CODES
            ),
            **{name: send[name] for name in CONTENT_FIELDS if name in send},
            "media_data": string("The file itself, base64-encoded.", contentEncoding="base64"),
            "media_filename": string("The file name Telegram shows (documents, audio)."),
        },
        required=("name",),
        description="One of a broadcast's contents; its fields mean what the send's do. " + _WEIGHT,
    )
    schemas["VariantReport"] = obj(
        {
            "name": string(),
            "weight": {"type": "integer"},
            "language_codes": array(string()),
            "message": string(),
            "media_type": ref("MediaType"),
            "media_url": string(),
            "sent": int64(),
            "failed": int64(),
            "outcome_counts": {
                "type": "object",
                "additionalProperties": {"type": "integer"},
                "description": "Its recipients per final outcome, keyed as the broadcast's.",
            },
        },
        required=("name", "sent", "failed", "outcome_counts"),
        closed=False,
        description="A variant and how its recipients fared (a recipient counts once final).",
    )
    send["variants"] = array(
        ref("Variant"), _VARIANTS, minItems=MIN_VARIANTS, maxItems=MAX_VARIANTS
    )
    schemas["SendMessageForm"]["properties"]["variants"] = string(
        "JSON text, as in the JSON body (`media_data` base64)."
    )
    schemas["Broadcast"]["properties"]["variants"] = array(
        ref("VariantReport"),
        "Its variants in the order given, with their outcomes (counts only in "
        "`GET /v1/broadcasts/{id}`); empty without variants (`message`, `media_type` and "
        "`media_url` are then the first variant's).",
    )
    schemas["DeliveryResult"]["properties"]["variant"] = {
        "type": ["string", "null"],
        "description": "The variant it was sent (or attempted); null without variants or "
        "before an attempt.",
    }
    preview = schemas["PreviewRequest"]
    preview["properties"].update(
        {
            "broadcast_id": int64(
                "Preview this stored broadcast's latest content instead of `message` (then "
                "absent): its bot's user, its variant as the workers choose it."
            ),
            "variant": string(
                "With variants: preview this one. Absent: the user's — for a message not sent "
                "yet only when the user's language decides (400 on `variant` when weights "
                "would: they pick by the broadcast's id)."
            ),
        }
    )
    preview["required"] = ["user_id"]
    schemas["PreviewResponse"]["properties"]["variant"] = string(
        "The variant shown (only with variants)."
    )
    schemas["Problem"]["properties"]["state"] = {
        "anyOf": [ref("BroadcastStatus"), string(enum=list(_REFUSED_STATES))],
        "description": "For 409 on a lifecycle move, recall or edit: the broadcast's current "
        "state, or what it is that refuses the move (`forward`: a forward cannot be edited; "
        "`bot_deleted`: its bot was deleted; `variants`: a broadcast with variants cannot be "
        "edited).",
    }
    return schemas
