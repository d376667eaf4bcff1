"""The OpenAPI document's building blocks: JSON Schema builders, the component schemas
(the proto's messages as REST JSON) and the examples.

Enum spellings come from the proto (``MEDIA_TYPE_PHOTO`` → ``"photo"``); request schemas
list exactly the fields the server's body models accept (checked by tests/test_openapi.py).
"""

from __future__ import annotations

from typing import Any

from tgbroadcast.server.rest import content
from tgbroadcast.v1 import broadcast_pb2 as pb

Schema = dict[str, Any]


def enum_names(enum: str) -> list[str]:
    """The REST spellings of a proto enum, in the proto's order, without UNSPECIFIED
    (``MediaType`` → ``["text", "photo", ...]``)."""
    values = pb.DESCRIPTOR.enum_types_by_name[enum].values
    prefix = values[0].name.removesuffix("UNSPECIFIED")
    return [v.name.removeprefix(prefix).lower() for v in values if v.number != 0]


MEDIA_TYPES = enum_names("MediaType")
PARSE_MODES = enum_names("ParseMode")
PARSE_MODE_ALIASES = list(content.PARSE_MODE_ALIASES)
STATUSES = enum_names("BroadcastStatus")
OUTCOMES = enum_names("DeliveryOutcome")
RECALLS = enum_names("RecallOutcome")
ALBUM_MEDIA_TYPES = ["photo", "video", "document", "audio"]
MAX_UPSERT_USERS = 10_000
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
TAG_PATTERN = "^[A-Za-z0-9_.:-]{1,64}$"
"""A tag (compared lower-cased): as ``tgbroadcast.core.rules.validation`` checks it."""
LANGUAGE_CODE_PATTERN = "^[A-Za-z0-9_-]{1,35}$"
MAX_FILTER_VALUES = 100
BOT_PATTERN = "^[a-z0-9_-]{0,32}$"
"""A bot's name, or empty: as absent (as the proto's empty ``bot``)."""
BOT_OMITTED = "Absent or empty: the API token's only bot if it may use exactly one, else `default`."

PAGE_SIZE: Schema = {
    "name": "page_size",
    "in": "query",
    "description": "At most this many items (default 100, at most 1000).",
    "schema": {"type": "integer", "minimum": 0, "maximum": 1000},
}
PAGE_TOKEN: Schema = {
    "name": "page_token",
    "in": "query",
    "description": "`next_page_token` of the previous page.",
    "schema": {"type": "string"},
}
BOT_PARAMETER: Schema = {
    "name": "bot",
    "in": "query",
    "description": "The bot whose users these are; listing broadcasts, only this bot's. A bot "
    "the API token may not use is a 403. Absent or empty: the token's only bot if it may use "
    "exactly one, else `default` (listing broadcasts: every bot the token may use).",
    "schema": {"type": "string", "pattern": BOT_PATTERN},
}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(
    properties: Schema, *, required: tuple[str, ...] = (), closed: bool = True, **extra: Any
) -> Schema:
    schema: Schema = {"type": "object", "properties": properties, **extra}
    if required:
        schema["required"] = list(required)
    if closed:
        schema["additionalProperties"] = False
    return schema


def int64(description: str = "", **extra: Any) -> Schema:
    """A JSON integer within 64 bits: the server refuses any other (400 naming the field)."""
    bounds = {"minimum": INT64_MIN, "maximum": INT64_MAX}
    schema: Schema = {"type": "integer", "format": "int64", **bounds, **extra}
    if description:
        schema["description"] = description
    return schema


def chat_id(description: str) -> Schema:
    """A Telegram chat id: any 64-bit integer but 0 (groups are negative)."""
    return {**int64(description), "not": {"const": 0}}


def filter_values(pattern: str, description: str) -> Schema:
    return array(string(pattern=pattern), description, maxItems=MAX_FILTER_VALUES)


def string(description: str = "", **extra: Any) -> Schema:
    schema: Schema = {"type": "string", **extra}
    if description:
        schema["description"] = description
    return schema


def boolean(description: str) -> Schema:
    return {"type": "boolean", "default": False, "description": description}


def timestamp(description: str) -> Schema:
    return {"type": ["string", "null"], "format": "date-time", "description": description}


def array(items: Schema, description: str = "", **extra: Any) -> Schema:
    schema: Schema = {"type": "array", "items": items, **extra}
    if description:
        schema["description"] = description
    return schema


def json_content(schema: Schema, examples: dict[str, Any] | None = None) -> Schema:
    media: Schema = {"schema": schema}
    if examples:
        media["examples"] = {name: {"value": value} for name, value in examples.items()}
    return {"application/json": media}


def component_schemas() -> dict[str, Schema]:
    media_type = string(
        "How to send it: one Bot API method each (`text` is sendMessage, `album` "
        "sendMediaGroup, `copy` copyMessage, ...). Absent or empty means `text`.",
        enum=["", *MEDIA_TYPES],
    )
    parse_mode = string(
        "How Telegram parses formatting in the text or caption; empty is plain text (or the "
        "explicit `entities`).",
        enum=["", *PARSE_MODES],
    )
    parse_mode_input = string(
        "How Telegram parses formatting in the text or caption; empty is plain text (or the "
        "explicit `entities`). `html` and `markdown_v2` are canonical (answers use them); "
        "Telegram's spellings `HTML`, `MarkdownV2` and `markdownv2` are accepted too, in any "
        "case.",
        enum=["", *PARSE_MODES, *PARSE_MODE_ALIASES],
    )
    user_filter = obj(
        {
            "tags": filter_values(TAG_PATTERN, "Users having at least one of these tags."),
            "language_codes": filter_values(
                LANGUAGE_CODE_PATTERN, "Users whose language_code is one of these."
            ),
        },
        description="Active users matching every given criterion; empty matches every active user.",
    )
    entity = obj(
        {
            "type": string("Telegram's entity type: `bold`, `italic`, `text_link`, `pre`, ..."),
            "offset": int64("In UTF-16 code units.", minimum=0),
            "length": int64("In UTF-16 code units.", minimum=1),
            "url": string("For `text_link`."),
            "language": string("For `pre`."),
            "custom_emoji_id": string("For `custom_emoji`."),
            "user_id": int64("For `text_mention`."),
            "unix_time": int64("For `date_time` (required there): seconds since the epoch."),
            "date_time_format": string("For `date_time`: `r`, or `w`, `d`/`D`, `t`/`T` in order."),
        },
        required=("type", "offset", "length"),
        description="Telegram's MessageEntity.",
    )
    button = obj(
        {
            "text": string(),
            "url": string("Opened by the button."),
            "callback_data": string("Sent to the bot (1-64 bytes)."),
        },
        required=("text",),
        description="Exactly one of `url` and `callback_data`.",
    )
    keyboard = obj(
        {
            "rows": array(
                obj(
                    {"buttons": array(ref("InlineKeyboardButton"), minItems=1, maxItems=8)},
                    required=("buttons",),
                ),
                "Rows of buttons (at most 100 buttons, 8 per row).",
                minItems=1,
            )
        },
        required=("rows",),
        description="An inline keyboard under the message.",
    )
    link_preview = obj(
        {
            "is_disabled": boolean("No link preview."),
            "url": string("The URL to preview instead of the first one in the text."),
            "prefer_small_media": boolean("A smaller preview."),
            "prefer_large_media": boolean("A larger preview."),
            "show_above_text": boolean("The preview above the text."),
        }
    )
    album_item = obj(
        {
            "media_type": string(enum=ALBUM_MEDIA_TYPES),
            "media_url": string("An http(s) URL Telegram fetches, or a file_id."),
            "media_data": string("Or the file itself, base64-encoded.", contentEncoding="base64"),
            "media_filename": string("The file name Telegram shows (documents, audio)."),
            "caption": string("0-1024 characters, formatted by the request's `parse_mode`."),
            "has_spoiler": boolean("Covered by a spoiler animation."),
        },
        required=("media_type",),
        description="One photo, video, document or audio of an album.",
    )
    message_ref = obj(
        {"from_chat_id": int64(), "message_id": int64()},
        required=("from_chat_id", "message_id"),
        description="A message in a chat the bot can read.",
    )
    send = obj(
        {
            "message": string(
                "The text (1-4096 characters) or caption (0-1024), counted in UTF-16."
            ),
            "media_type": media_type,
            "media_url": string("For media: an http(s) URL Telegram fetches, or a file_id."),
            "user_ids": array(
                chat_id(""),
                "Telegram chat ids; duplicates are sent once, unknown ids are recorded as users.",
            ),
            "all_users": boolean("Send to every active user instead of `user_ids`."),
            "filter": ref("UserFilter"),
            "allow_paid_broadcast": boolean(
                "Telegram's paid broadcasts: up to 1000 messages per second, each message over "
                "the free 30 per second costing 0.1 Telegram Stars."
            ),
            "idempotency_key": string(
                "1-255 printable ASCII characters (or the `Idempotency-Key` header): the same "
                "key with the same request returns the first broadcast (`replayed: true`).",
                minLength=1,
                maxLength=255,
            ),
            "parse_mode": parse_mode_input,
            "entities": array(ref("MessageEntity"), "Explicit formatting instead of `parse_mode`."),
            "reply_markup": ref("InlineKeyboardMarkup"),
            "disable_notification": boolean("Deliver silently."),
            "protect_content": boolean("Forbid forwarding and saving."),
            "link_preview_options": ref("LinkPreviewOptions"),
            "album": array(ref("AlbumItem"), "For `album`: 2-10 items.", maxItems=10),
            "source": ref("MessageRef"),
            "send_at": {
                "type": "string",
                "format": "date-time",
                "description": "Start then instead of now; `scheduled` until then.",
            },
            "callback_url": string(
                "Receives a signed JSON summary when the broadcast ends "
                "(`X-Tgbroadcast-Signature: sha256=<hex HMAC-SHA256 of <timestamp>.<body>>`, "
                "the timestamp in `X-Tgbroadcast-Timestamp`). Public addresses only: a host "
                "that is, or resolves to, a loopback, private, link-local, CGNAT, multicast, "
                "unspecified or reserved address is refused unless "
                "`webhook.allow_private_networks`; redirects are not followed.",
                format="uri",
            ),
            "personalize": boolean(
                "Fill `{field}` / `{field|fallback}` placeholders from each recipient's user "
                "record: id, username, first_name, last_name, full_name, language_code."
            ),
            "bot": string(
                "The bot that sends it; its users are the audience. A bot the API token may "
                "not use is a 403, one the service does not know a 400. " + BOT_OMITTED,
                pattern=BOT_PATTERN,
            ),
        },
        description="A broadcast: the content, and exactly one audience (`user_ids`, "
        "`all_users` or `filter`).",
    )
    send_form = obj(
        {
            "message": string("As in the JSON body."),
            "media_type": media_type,
            "media_url": string("Not with `media`."),
            "user_ids": string("A JSON array of chat ids, e.g. `[111, 222]`."),
            "all_users": string(enum=["true", "false"]),
            "allow_paid_broadcast": string(enum=["true", "false"]),
            "idempotency_key": string("As in the JSON body.", minLength=1, maxLength=255),
            "bot": string("As in the JSON body.", pattern=BOT_PATTERN),
            "send_at": string("An RFC 3339 time, as in the JSON body.", format="date-time"),
            "callback_url": string("As in the JSON body.", format="uri"),
            "parse_mode": parse_mode_input,
            "filter": string('JSON text, e.g. `{"tags": ["vip"]}`.'),
            **{
                name: string("JSON text, as in the JSON body.")
                for name in ("entities", "reply_markup", "link_preview_options", "source")
            },
            "album": string("JSON text, as in the JSON body (items' `media_data` base64)."),
            **{
                name: string(enum=["true", "false"])
                for name in ("disable_notification", "protect_content", "personalize")
            },
            "media": {
                "type": "string",
                "contentMediaType": "application/octet-stream",
                "description": "The file itself (photos up to 10 MB, other files 50 MB); "
                "uploaded to Telegram once, then sent by file_id.",
            },
        },
        description="The JSON body's fields as form fields (arrays and objects as JSON text, "
        "flags `true`/`false`), and the file as the part `media`. Errors name the form field "
        "(`filter.tags[0]` inside a JSON one).",
    )
    action = obj(
        {
            "action": string(enum=enum_names("ControlAction")),
            "actor": string("The asking API token's name.", maxLength=64),
            "at": {"type": "string", "format": "date-time"},
        },
        required=("action", "actor", "at"),
        closed=False,
    )
    broadcast = obj(
        {
            "broadcast_id": int64(),
            "bot": string("The bot that sends it (`default` for broadcasts from before bots)."),
            "status": ref("BroadcastStatus"),
            "total": int64("Distinct recipients."),
            "sent": int64(),
            "failed": int64("Every recipient not delivered, whatever the reason."),
            "pending": int64("`sent + failed + pending == total` at every moment."),
            "message": string(),
            "media_type": string(enum=MEDIA_TYPES),
            "media_url": string(),
            "created_at": timestamp("When it was stored."),
            "started_at": timestamp("When it went from queued to running."),
            "finished_at": timestamp("When it reached a final state."),
            "send_at": timestamp("When a scheduled broadcast starts."),
            "error": {"type": ["string", "null"], "description": "Why a failed broadcast stopped."},
            "outcome_counts": {
                "type": "object",
                "propertyNames": {"enum": OUTCOMES},
                "additionalProperties": int64(),
                "description": "Recipients per final outcome; outcomes no recipient has are "
                "absent. Empty in lists and in the answers of pause, resume, cancel, recall "
                "and edit (GET the broadcast for them).",
            },
            "allow_paid_broadcast": {"type": "boolean"},
            "idempotency_key": string(),
            "parse_mode": parse_mode,
            "callback_url": string(),
            "created_by": string("The sending API token's name, never the token.", maxLength=64),
            "actions": array(action, "Each pause, resume, cancel and recall, oldest first."),
            "recall_at": timestamp("When it was recalled; null unless recalling or recalled."),
            "throttled_until": timestamp("While a long flood wait parks its bot: when it ends."),
            "recalled": int64("Sent recipients whose recall has its outcome so far."),
            "recall_counts": {
                "type": "object",
                "propertyNames": {"enum": RECALLS},
                "additionalProperties": int64(),
                "description": "Recipients per recall outcome once recalled. Not in lists.",
            },
        },
        required=("broadcast_id", "status", "total", "sent", "failed", "pending"),
        closed=False,
    )
    delivery = obj(
        {
            "user_id": int64(),
            "outcome": ref("DeliveryOutcome"),
            "error": {
                "type": ["string", "null"],
                "description": "Telegram's description when the outcome is not `sent`.",
            },
            "message_id": {
                "type": ["integer", "null"],
                "format": "int64",
                "description": "Telegram's message id when `sent` (an album's first message).",
            },
            "finished_at": timestamp("When the outcome was final; null while pending."),
            "message_ids": {
                "type": "array",
                "items": {"type": "integer", "format": "int64"},
                "description": "Every message Telegram made of it when `sent`, in order: one "
                "id, or an album's items. Empty otherwise.",
            },
            "recall": {
                "type": ["string", "null"],
                "enum": [*RECALLS, None],
                "description": "What a recall did to its messages; null until it did.",
            },
            "recall_error": {
                "type": ["string", "null"],
                "description": "Telegram's description when `recall` is `failed`.",
            },
        },
        required=("user_id", "outcome"),
        closed=False,
    )
    progress = obj(
        {
            "status": ref("BroadcastStatus"),
            "total": int64(),
            "sent": int64(),
            "failed": int64(),
            "pending": int64(),
            "recalled": int64("Recall outcomes so far (a recalled broadcast's only)."),
        },
        required=("status", "total", "sent", "failed", "pending"),
        closed=False,
    )
    user_fields: Schema = {
        "id": int64("The Telegram user id (the private chat id)."),
        "username": {"type": ["string", "null"], "maxLength": 32},
        "first_name": {"type": ["string", "null"], "maxLength": 64},
        "last_name": {"type": ["string", "null"], "maxLength": 64},
        "language_code": {"type": ["string", "null"], "maxLength": 35},
        "tags": array(
            string(pattern=TAG_PATTERN),
            "Labels used by `filter.tags` (at most 100); an upsert replaces them.",
            maxItems=100,
        ),
    }
    user = obj(
        {
            **user_fields,
            "active": {"type": "boolean", "description": "Inactive users get no broadcasts."},
            "blocked_reason": {
                "type": ["string", "null"],
                "description": "`blocked` or `deactivated`; null while active.",
            },
            "blocked_at": timestamp("When the user became inactive."),
            "created_at": timestamp(""),
            "updated_at": timestamp(""),
        },
        required=("id",),
        closed=False,
    )
    return {
        "MediaType": string(enum=MEDIA_TYPES),
        "ParseMode": parse_mode,
        "BroadcastStatus": string(
            "`scheduled` → `queued` → `running` → `completed`; `paused` by pause, `cancelled` "
            "by cancel, `failed` when the service stopped it (`error` says why); `recalling` "
            "→ `recalled` by recall.",
            enum=STATUSES,
        ),
        "DeliveryOutcome": string(
            "A recipient's outcome; `pending` until it has a final one.", enum=OUTCOMES
        ),
        "UserFilter": user_filter,
        "MessageEntity": entity,
        "InlineKeyboardButton": button,
        "InlineKeyboardMarkup": keyboard,
        "LinkPreviewOptions": link_preview,
        "AlbumItem": album_item,
        "MessageRef": message_ref,
        "SendMessageRequest": send,
        "SendMessageForm": send_form,
        "SendMessageResponse": obj(
            {
                "broadcast_id": int64(),
                "status": ref("BroadcastStatus"),
                "total": int64("Distinct recipients resolved from the audience."),
                "replayed": {
                    "type": "boolean",
                    "description": "True when an earlier request with the same idempotency "
                    "key created the broadcast.",
                },
            },
            required=("broadcast_id", "status", "total"),
            closed=False,
        ),
        "Broadcast": broadcast,
        "BroadcastList": obj(
            {"broadcasts": array(ref("Broadcast"), "Newest first."), "next_page_token": string()},
            required=("broadcasts", "next_page_token"),
            closed=False,
        ),
        "DeliveryResult": delivery,
        "DeliveryList": obj(
            {
                "results": array(ref("DeliveryResult"), "Ordered by user id."),
                "next_page_token": string("Empty on the last page."),
            },
            required=("results", "next_page_token"),
            closed=False,
        ),
        "Progress": progress,
        "ResultEvent": {
            "allOf": [
                ref("DeliveryResult"),
                obj({"progress": ref("Progress")}, required=("progress",), closed=False),
            ],
            "description": "The `data` of an SSE `result` event: one recipient's final "
            "outcome and the counters including it; also of a `recall` event: the recipient "
            "again, with `recall` set, once a recall dealt with its messages.",
        },
        "EndEvent": obj(
            {"progress": ref("Progress")},
            required=("progress",),
            closed=False,
            description="The `data` of the closing SSE `end` event: the final counters.",
        ),
        "PreviewRequest": obj(
            {
                "message": ref("SendMessageRequest"),
                "user_id": int64("The user whose fields fill the placeholders."),
            },
            required=("message",),
        ),
        "PreviewResponse": obj(
            {
                "text": string("The text or caption as this user would receive it."),
                "album_captions": array(string(), "The rendered album captions, in order."),
                "parse_mode": parse_mode,
            },
            required=("text",),
            closed=False,
        ),
        "UserInput": obj(
            {**user_fields, "id": chat_id("The Telegram user id.")},
            required=("id",),
        ),
        "User": user,
        "UpsertUsersRequest": obj(
            {
                "users": array(ref("UserInput"), minItems=1, maxItems=MAX_UPSERT_USERS),
                "bot": string("The bot whose users they are. " + BOT_OMITTED, pattern=BOT_PATTERN),
            },
            required=("users",),
        ),
        "UserList": obj(
            {"users": array(ref("User"), "Ordered by id."), "next_page_token": string()},
            required=("users", "next_page_token"),
            closed=False,
        ),
        "Problem": obj(
            {
                "type": string("Always `about:blank`."),
                "title": string("The HTTP status phrase."),
                "status": {"type": "integer"},
                "detail": string("What went wrong, precisely."),
                "errors": array(
                    obj(
                        {
                            "field": string("The field's path, e.g. `user_ids[3]`."),
                            "message": string(),
                        },
                        required=("field", "message"),
                    ),
                    "For 400: one entry per offending field.",
                ),
                "state": {
                    **ref("BroadcastStatus"),
                    "description": "For 409 on cancel, pause or resume: the broadcast's "
                    "current state.",
                },
                "imported": int64(
                    "For 400 on a CSV import: the users the chunks before the bad line "
                    "imported (they stay committed)."
                ),
            },
            required=("type", "title", "status", "detail"),
            closed=False,
            description="An RFC 9457 problem document.",
        ),
        **health_schemas(),
    }


def health_schemas() -> dict[str, Schema]:
    """``/livez`` and ``/readyz`` (:mod:`tgbroadcast.server.rest.health`)."""
    check = string("`ok`, or why not (`failed (ConnectionRefusedError)`, `no answer within 1 s`).")
    return {
        "Live": obj({"status": string(enum=["live"])}, required=("status",)),
        "Ready": obj({"status": string(enum=["ready"])}, required=("status",)),
        "NotReady": obj(
            {
                "type": string(),
                "title": string(),
                "status": {"type": "integer", "enum": [503]},
                "detail": string("`not ready: ` and the failing checks' names."),
                "checks": obj(
                    {
                        "database": check,
                        "nats": check,
                        "draining": string("`ok`, or `shutting down`."),
                    },
                    required=("draining",),
                    description="Each check's result (a standalone worker's too).",
                ),
            },
            required=("type", "title", "status", "detail", "checks"),
            description="An RFC 9457 problem document naming the failing checks.",
        ),
    }
