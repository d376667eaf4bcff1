"""``null`` in a JSON request body: the OpenAPI document admits it exactly where the server's
body model takes it as absent, and the server does what the document says."""

from __future__ import annotations

from typing import Any

import pytest
from openapi_schema_validator import OAS31Validator
from pydantic import TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from tests.fixtures.rest import get, post
from tests.fixtures.stack import Stack
from tgbroadcast.server.rest import openapi
from tgbroadcast.server.rest.openapi_nulls import REQUEST_MODELS

on_sqlite = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

DOC = openapi.document()
SCHEMAS = DOC["components"]["schemas"]


def documented_null(schema: dict[str, Any]) -> bool:
    """Whether the document's ``schema`` (its references resolved in DOC) admits null."""
    validator = OAS31Validator({**schema, "components": DOC["components"]})
    return bool(validator.is_valid(None))


def model_takes_null(field: FieldInfo) -> bool:
    try:
        TypeAdapter(field.annotation).validate_python(None, strict=True)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("name", sorted(REQUEST_MODELS))
def test_a_field_admits_null_in_the_document_exactly_when_the_server_takes_it(name: str) -> None:
    properties = SCHEMAS[name]["properties"]
    model = REQUEST_MODELS[name]
    assert set(properties) == set(model.model_fields)
    for field_name, field in model.model_fields.items():
        takes = model_takes_null(field)
        assert documented_null(properties[field_name]) == takes, (name, field_name, takes)


def test_the_send_body_takes_null_for_its_content_and_options() -> None:
    # The contract's own fields: a client that writes every field of its type sends nulls.
    send = SCHEMAS["SendMessageRequest"]["properties"]
    for field_name in ("message", "media_type", "media_url", "user_ids", "filter", "bot"):
        assert documented_null(send[field_name]), field_name
    for field_name in ("all_users", "allow_paid_broadcast", "track_clicks"):
        assert not documented_null(send[field_name]), field_name


@on_sqlite
async def test_a_null_is_absent_and_a_null_flag_a_precise_400(stack: Stack) -> None:
    send = SCHEMAS["SendMessageRequest"]["properties"]
    model = REQUEST_MODELS["SendMessageRequest"]
    nulls = {
        name: None
        for name in send
        if name not in ("message", "user_ids") and model_takes_null(model.model_fields[name])
    }
    assert {"media_type", "media_url", "filter", "entities", "reply_markup"} <= set(nulls)
    body = {"message": "hi", "user_ids": [111, 222], **nulls}
    status, answer = await post(stack, "/send-message", body)
    assert status == 202, answer
    assert answer["total"] == 2
    status, broadcast = await get(stack, f"/v1/broadcasts/{answer['broadcast_id']}")
    assert status == 200, broadcast
    assert broadcast["media_type"] == "text"
    assert broadcast["message"] == "hi"

    for flag in ("all_users", "allow_paid_broadcast"):
        status, problem = await post(
            stack, "/send-message", {"message": "hi", "user_ids": [111], flag: None}
        )
        assert status == 400, problem
        assert [e["field"] for e in problem["errors"]] == [flag]
