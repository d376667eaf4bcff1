"""The request schemas' nulls: what a body field's ``null`` means, said where the server's
body model says it.

A JSON body's optional field that the server's model types as ``X | None`` (absent: ``None``)
takes ``null`` as absent — ``{"message": "hi", "media_url": null}`` is a text message, as
clients that write every field of their own type send it. The document says so field by
field from the models themselves (:data:`REQUEST_MODELS`): such a field's schema admits
``null``, every other field's does not (a ``null`` flag or list is a 400 naming the field).
``tests/test_openapi.py`` checks both sides against the models.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Final, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from tgbroadcast.server.rest import bots, content, users
from tgbroadcast.server.rest.openapi_schemas import Schema

REQUEST_MODELS: Final[Mapping[str, type[BaseModel]]] = {
    "SendMessageRequest": content.SendMessageBody,
    "MessageEntity": content.EntityBody,
    "InlineKeyboardButton": content.ButtonBody,
    "InlineKeyboardMarkup": content.KeyboardBody,
    "LinkPreviewOptions": content.LinkPreviewBody,
    "AlbumItem": content.AlbumItemBody,
    "MessageRef": content.SourceBody,
    "UserFilter": content.UserFilterBody,
    "EditRequest": content.EditBody,
    "PreviewRequest": content.PreviewBody,
    "Variant": content.VariantBody,
    "UserInput": users.UserBody,
    "UpsertUsersRequest": users.UpsertUsersBody,
    "CreateBotRequest": bots.CreateBotBody,
}
"""Each JSON request body's schema (by component name) and the model the server reads it with."""


def takes_null(field: FieldInfo) -> bool:
    """Whether the model reads ``null`` for this field (its type admits ``None``)."""
    origin = get_origin(field.annotation)
    return (origin is Union or origin is types.UnionType) and type(None) in get_args(
        field.annotation
    )


def with_nulls(schemas: dict[str, Schema]) -> dict[str, Schema]:
    """``schemas`` with ``null`` admitted by every request field whose model takes it."""
    for name, model in REQUEST_MODELS.items():
        properties = schemas[name]["properties"]
        for field_name, field in model.model_fields.items():
            if field_name in properties and takes_null(field):
                properties[field_name] = _nullable(properties[field_name])
    return schemas


def _nullable(schema: Schema) -> Schema:
    """``schema`` admitting ``null`` too (a new schema: the one given may be shared)."""
    kind = schema.get("type")
    if kind is None:  # a $ref, or a combination
        return {"anyOf": [schema, {"type": "null"}]}
    if isinstance(kind, list):
        if "null" in kind:
            return schema
        nullable = {**schema, "type": [*kind, "null"]}
    else:
        nullable = {**schema, "type": [kind, "null"]}
    if "enum" in schema:
        nullable["enum"] = [*schema["enum"], None]
    return nullable
