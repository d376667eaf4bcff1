"""The OpenAPI document's part for what follows a send: recall and edit (their routes, the
edit's request, and the fields they add to broadcasts, deliveries and progress)."""

from __future__ import annotations

from collections.abc import Callable

from tgbroadcast.server.rest.openapi_schemas import (
    Schema,
    enum_names,
    int64,
    json_content,
    obj,
    ref,
    string,
    timestamp,
)

EDITS = enum_names("EditOutcome")

_EDIT_DESCRIPTION = (
    "Replaces the text or caption, its formatting and the keyboard (an edit without "
    "`reply_markup` removes it, as Telegram's edits do), and for a single photo, video, "
    "animation, document or audio the media (`media_url`: a file_id or a URL Telegram "
    "fetches), as the broadcast's next `content_version`. Recipients not sent yet get the new "
    "content; every message already sent is edited with the `editMessage*` method its kind "
    "takes (personalized per recipient). Each sent recipient's `edit` outcome streams as an "
    "SSE `edit` event; `editing` is true until all have one. 400 for content the broadcast "
    "cannot take; 409 for a recalling or recalled broadcast (`state`) or a forward (`state: "
    "forward`). Needs the scope `broadcasts:control`."
)


def _move(operation_id: str, summary: str, errors: Callable[..., dict[str, Schema]]) -> Schema:
    return {
        "operationId": operation_id,
        "summary": summary,
        "tags": ["broadcasts"],
        "parameters": [{"$ref": "#/components/parameters/BroadcastId"}],
        "responses": {
            "200": {
                "description": "The broadcast after the move.",
                "content": json_content(ref("Broadcast")),
            },
            **errors(400, 401, 404, 409, 503),
        },
    }


def followup_paths(errors: Callable[..., dict[str, Schema]]) -> dict[str, Schema]:
    """``errors(*statuses)``: the document's error answers."""
    edit = _move("editBroadcast", "Give every message sent, and the rest, new content", errors)
    edit["description"] = _EDIT_DESCRIPTION
    edit["requestBody"] = {"required": True, "content": json_content(ref("EditRequest"))}
    edit["responses"].update(errors(413, 415))
    recall = "Delete its messages from every chat (nothing more is sent; ends `recalled`)"
    return {
        "/v1/broadcasts/{broadcast_id}/recall": {"post": _move("recallBroadcast", recall, errors)},
        "/v1/broadcasts/{broadcast_id}/edit": {"post": edit},
    }


def with_followups(schemas: dict[str, Schema]) -> dict[str, Schema]:
    """``schemas`` with the edit's request, and the edit's fields on ``Broadcast``,
    ``DeliveryResult`` and ``Progress``."""
    schemas["EditRequest"] = obj(
        {
            "message": string(
                "The new text (required for a text broadcast) or caption (empty: none; an "
                "album's is its first item's). A personalized broadcast's is a template."
            ),
            "parse_mode": schemas["SendMessageRequest"]["properties"]["parse_mode"],
            "entities": schemas["SendMessageRequest"]["properties"]["entities"],
            "reply_markup": ref("InlineKeyboardMarkup"),
            "media_url": string("New media: a file_id or a URL Telegram fetches; absent: kept."),
        }
    )
    outcome = {
        "type": ["string", "null"],
        "enum": [*EDITS, None],
        "description": "What the last edit to reach it did; null until one did.",
    }
    schemas["Broadcast"]["properties"].update(
        {
            "content_version": int64("1 as sent; each edit adds one.", minimum=1),
            "edit_at": timestamp("When it was last edited; null if never."),
            "editing": {
                "type": "boolean",
                "description": "The last edit still has sent recipients to edit.",
            },
            "edited": int64("Sent recipients whose edit to `content_version` has its outcome."),
            "edit_counts": {
                "type": "object",
                "propertyNames": {"enum": EDITS},
                "additionalProperties": int64(),
                "description": "Recipients per outcome of the edit to `content_version`. Not "
                "in lists.",
            },
        }
    )
    schemas["DeliveryResult"]["properties"].update(
        {
            "content_version": {
                "type": ["integer", "null"],
                "description": "The content version its send, or the last edit that reached "
                "it, was of; null unless `sent`.",
            },
            "edit": outcome,
            "edit_error": {
                "type": ["string", "null"],
                "description": "Telegram's description when `edit` is `failed`.",
            },
        }
    )
    schemas["Progress"]["properties"]["edited"] = int64(
        "Outcomes of the newest edit seen so far (an edited broadcast's only)."
    )
    return schemas
