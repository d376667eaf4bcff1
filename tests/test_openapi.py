"""The OpenAPI document (``GET /openapi.json``) against the service it describes.

It must list exactly the routes the aiohttp app serves, be valid OpenAPI 3.1, hold examples
that match its own schemas, and describe what the real server does: its SendMessage examples
are accepted, and its error shape is the shape of real errors.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from tests.fixtures.rest import get, post
from tests.fixtures.stack import API_TOKEN, Backend, Stack, start_stack
from tests.fixtures.watching import watch
from tgbroadcast.server.auth import TokenCheck
from tgbroadcast.server.rest import app as rest_app
from tgbroadcast.server.rest import openapi, openapi_examples
from tgbroadcast.server.rest.openapi_nulls import REQUEST_MODELS
from tgbroadcast.simulator import Simulator

# The document does not depend on the store: one backend is enough.
on_sqlite = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

DOC = openapi.document()
METHODS = frozenset({"get", "put", "post", "delete", "patch"})


def documented_operations() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in DOC["paths"].items()
        for method in item
        if method in METHODS
    }


def schema_validator(schema: dict[str, Any]) -> OAS31Validator:
    """A validator for ``schema`` whose ``#/components/...`` references resolve in DOC."""
    return OAS31Validator({**schema, "components": DOC["components"]})


def assert_valid(instance: Any, schema: dict[str, Any]) -> None:
    errors = [
        f"{'/'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
        for error in schema_validator(schema).iter_errors(instance)
    ]
    assert not errors, errors


def schema_of(ref: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{ref}"}


def media_examples() -> Iterator[tuple[str, dict[str, Any], Any]]:
    """Every (where, schema, example value) in the document's request and response bodies."""
    components = DOC["components"]["responses"].items()
    bodies: list[tuple[str, dict[str, Any]]] = [
        (f"components.responses.{name}", response) for name, response in components
    ]
    for path, item in DOC["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            if "requestBody" in operation:
                bodies.append((f"{method} {path} request", operation["requestBody"]))
            for status, response in operation["responses"].items():
                bodies.append((f"{method} {path} {status}", response))
    for where, body in bodies:
        for media_type, media in body.get("content", {}).items():
            if "example" in media:
                yield f"{where} {media_type}", media["schema"], media["example"]
            for name, example in media.get("examples", {}).items():
                yield f"{where} {media_type} {name}", media["schema"], example["value"]


async def test_the_document_is_valid_openapi_3_1() -> None:
    assert DOC["openapi"].startswith("3.1.")
    validate(DOC)


async def test_every_example_matches_its_schema() -> None:
    checked = 0
    for where, schema, value in media_examples():
        if schema.get("type") == "string":
            assert isinstance(value, str), where
        else:
            try:
                assert_valid(value, schema)
            except AssertionError as exc:
                raise AssertionError(f"{where}: {exc}") from None
        checked += 1
    # The SendMessage examples twice (both routes), users, preview, a broadcast, a problem.
    assert checked >= 8


@on_sqlite
async def test_the_app_serves_exactly_the_documented_routes(stack: Stack) -> None:
    assert stack.running.api is not None
    app = rest_app.create_app(
        stack.running.api.service, TokenCheck([("test", API_TOKEN)]), max_body_bytes=1 << 20
    )
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    documented = documented_operations()
    undocumented = sorted(served - documented)
    assert not undocumented, f"served but not documented: {undocumented}"
    unserved = sorted(documented - served)
    assert not unserved, f"documented but not served: {unserved}"


@on_sqlite
async def test_the_document_is_served_without_a_token(stack: Stack) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(stack.http_url + openapi.OPENAPI_PATH) as response,
    ):
        assert response.status == 200
        assert response.content_type == "application/json"
        assert await response.json() == DOC


def test_the_multipart_send_body_lists_the_fields_the_server_accepts() -> None:
    documented = set(DOC["components"]["schemas"]["SendMessageForm"]["properties"])
    assert documented == set(rest_app._FORM_TEXT_FIELDS) | {"media"}


@pytest.fixture
async def documented_stack(backend: Backend, simulator: Simulator) -> AsyncIterator[Stack]:
    """A stack configured for every documented feature (``callback_url`` needs a secret)."""
    overrides = {"TGB_WEBHOOK_SECRET": "openapi-examples-webhook-secret"}
    async with start_stack(backend, simulator, overrides) as stack:
        yield stack


@on_sqlite
@pytest.mark.parametrize("example", sorted(openapi_examples.SEND_EXAMPLES))
async def test_the_send_examples_are_accepted(documented_stack: Stack, example: str) -> None:
    stack = documented_stack
    if example != "text":  # the others select users the users example creates
        status, body = await post(stack, "/v1/users", openapi_examples.USERS_EXAMPLE)
        assert status == 200, body
    for path in ("/send-message", "/v1/broadcasts"):
        body = dict(openapi_examples.SEND_EXAMPLES[example])
        body.pop("idempotency_key", None)  # one broadcast per route, not a replay
        status, answer = await post(stack, path, body)
        assert status == 202, answer
        assert_valid(answer, schema_of("SendMessageResponse"))
        assert answer["total"] > 0


@on_sqlite
async def test_the_users_and_preview_examples_are_accepted(stack: Stack) -> None:
    status, answer = await post(stack, "/v1/users", openapi_examples.USERS_EXAMPLE)
    assert status == 200, answer
    assert answer == {"upserted": len(openapi_examples.USERS_EXAMPLE["users"])}
    status, answer = await post(stack, "/v1/preview", openapi_examples.PREVIEW_EXAMPLE)
    assert status == 200, answer
    assert_valid(answer, schema_of("PreviewResponse"))
    assert answer["text"] == "Hi Alice!"


@on_sqlite
async def test_real_errors_have_the_documented_shape(stack: Stack) -> None:
    problem = schema_of("Problem")
    async with aiohttp.ClientSession() as session:
        bad = {"message": "hi", "user_ids": [1, "two"], "chat_ids": [1]}
        async with session.post(
            stack.http_url + "/send-message", json=bad, headers=stack.auth
        ) as response:
            assert response.status == 400
            assert response.content_type == openapi.PROBLEM_JSON
            body = await response.json(content_type=None)
        assert_valid(body, problem)
        # The documented list of offending fields is where the real ones are.
        assert {e["field"] for e in body["errors"]} == {"user_ids[1]", "chat_ids"}

        async with session.get(stack.http_url + "/v1/broadcasts/1") as response:
            assert response.status == 401
            assert "WWW-Authenticate" in response.headers
            assert_valid(await response.json(content_type=None), problem)

        async with session.get(stack.http_url + "/v1/broadcasts/424242", headers=stack.auth) as r:
            assert r.status == 404
            assert_valid(await r.json(content_type=None), problem)

        async with session.post(
            stack.http_url + "/v1/users",
            data=b"id\n1\n",
            headers={**stack.auth, "Content-Type": "text/plain"},
        ) as response:
            assert response.status == 415
            assert_valid(await response.json(content_type=None), problem)


def sample(parameter: dict[str, Any]) -> str:
    """A value the service must accept for a documented query parameter."""
    if parameter["name"] == "page_token":
        return ""  # the first page
    schema = parameter["schema"]
    items = schema.get("items", schema)
    if "$ref" in items:
        items = DOC["components"]["schemas"][items["$ref"].rsplit("/", 1)[1]]
    if "enum" in items:
        return str(items["enum"][0])
    return {"integer": "10", "boolean": "true"}.get(items.get("type", ""), "vip")


@on_sqlite
async def test_documented_gets_accept_their_parameters_and_answer_their_schemas(
    stack: Stack,
) -> None:
    status, answer = await post(stack, "/v1/users", openapi_examples.USERS_EXAMPLE)
    assert status == 200, answer
    status, answer = await post(stack, "/send-message", openapi_examples.SEND_EXAMPLES["text"])
    assert status == 202, answer
    await watch(stack, answer["broadcast_id"])  # finished: every report has rows
    ids = {"broadcast_id": str(answer["broadcast_id"]), "user_id": "111", "name": "default"}
    checked = []
    async with aiohttp.ClientSession(headers=stack.auth) as session:
        for path, item in DOC["paths"].items():
            operation = item.get("get")
            if operation is None or operation.get("security") == [] or path.endswith("/events"):
                continue  # the event stream is followed by tests/test_reports*
            url = stack.http_url + path.format(**ids)
            query = [
                (p["name"], sample(p))
                for p in operation.get("parameters", [])
                if "in" in p and p["in"] == "query"
            ]
            async with session.get(url, params=query) as response:
                text = await response.text()
                assert response.status == 200, (path, text)
                ok = operation["responses"]["200"]["content"]
                assert response.content_type in ok, (path, response.content_type)
                if response.content_type == "application/json":
                    assert_valid(await response.json(), ok["application/json"]["schema"])
            checked.append(path)
            # A misspelt parameter is refused rather than ignored, with or without filters.
            async with session.get(url, params={"not_documented": "1"}) as response:
                assert response.status == 400, path
                body = await response.json(content_type=None)
                assert [e["field"] for e in body["errors"]] == ["not_documented"], path
    assert len(checked) == 9, checked


@on_sqlite
async def test_the_event_stream_carries_the_documented_events(stack: Stack) -> None:
    status, answer = await post(stack, "/send-message", openapi_examples.SEND_EXAMPLES["text"])
    assert status == 202, answer
    broadcast_id = answer["broadcast_id"]
    url = f"{stack.http_url}/v1/broadcasts/{broadcast_id}/events"
    async with (
        aiohttp.ClientSession(headers=stack.auth) as session,
        session.get(url) as response,
    ):
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        text = await response.text()  # the stream ends after the closing event
    events: list[tuple[str, Any]] = []
    for block in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if not line.startswith(":")
        )
        if "event" in fields:
            events.append((fields["event"], json.loads(fields["data"])))
    *results, (last, end) = events
    assert last == "end"
    assert_valid(end, schema_of("EndEvent"))
    assert end["progress"]["status"] == "completed"
    assert {kind for kind, _ in results} == {"result"}
    for _, data in results:
        assert_valid(data, schema_of("ResultEvent"))
    assert sorted(data["user_id"] for _, data in results) == [111, 222, 333]


# Request schemas and the pydantic models the server validates bodies with: same fields.
@pytest.mark.parametrize("name", sorted(REQUEST_MODELS))
def test_request_schemas_list_the_fields_the_server_accepts(name: str) -> None:
    documented = set(DOC["components"]["schemas"][name]["properties"])
    assert documented == set(REQUEST_MODELS[name].model_fields)


def test_every_operation_documents_its_errors() -> None:
    for path, item in DOC["paths"].items():
        for method, operation in item.items():
            responses = set(operation["responses"])
            if operation.get("security") == []:
                continue
            assert {"401", "403", "429"} <= responses, f"{method} {path}"
            assert "400" in responses, f"{method} {path}"
            if "{" in path:
                assert "404" in responses, f"{method} {path}"
            if "requestBody" in operation:
                assert {"413", "415"} <= responses, f"{method} {path}"


def assert_documented(instance: Any, name: str) -> None:
    """``instance`` matches the schema ``name``, and has no member the schema does not list
    (the response schemas are open, so validation alone would let one through)."""
    assert_valid(instance, schema_of(name))
    undocumented = set(instance) - set(DOC["components"]["schemas"][name]["properties"])
    assert not undocumented, (name, undocumented)


@on_sqlite
async def test_real_answers_match_the_documented_members(documented_stack: Stack) -> None:
    stack = documented_stack
    status, answer = await post(stack, "/v1/users", openapi_examples.USERS_EXAMPLE)
    assert status == 200, answer
    status, user = await get(stack, "/v1/users/111")
    assert status == 200
    assert user["tags"] == ["vip"]
    assert_documented(user, "User")

    body = {**openapi_examples.SEND_EXAMPLES["scheduled"], "idempotency_key": "doc-replay"}
    status, first = await post(stack, "/v1/broadcasts", body)
    assert status == 202, first
    assert_documented(first, "SendMessageResponse")
    status, replay = await post(stack, "/v1/broadcasts", body)
    assert (status, replay) == (202, {**first, "replayed": True})
    assert_documented(replay, "SendMessageResponse")

    status, broadcast = await get(stack, f"/v1/broadcasts/{first['broadcast_id']}")
    assert status == 200
    assert broadcast["send_at"] == body["send_at"]
    assert broadcast["callback_url"] == body["callback_url"]
    assert broadcast["idempotency_key"] == "doc-replay"
    assert_documented(broadcast, "Broadcast")

    status, cancelled = await post(stack, f"/v1/broadcasts/{first['broadcast_id']}/cancel", None)
    assert status == 200
    assert cancelled["status"] == "cancelled"
    assert cancelled["finished_at"] is not None
    status, conflict = await post(stack, f"/v1/broadcasts/{first['broadcast_id']}/pause", None)
    assert status == 409
    assert conflict["state"] == "cancelled"
    assert_documented(conflict, "Problem")

    status, other = await post(
        stack, "/v1/broadcasts", {**body, "all_users": False, "user_ids": [1]}
    )
    assert status == 409  # the key reused with another request
    assert_documented(other, "Problem")

    async with (
        aiohttp.ClientSession() as session,
        session.post(
            stack.http_url + "/v1/users/import",
            data=b"id,tags\n5,ok\n0,ok\n",
            headers={**stack.auth, "Content-Type": "text/csv"},
        ) as response,
    ):
        assert response.status == 400
        refused = await response.json(content_type=None)
    assert refused["imported"] == 0
    assert [e["field"] for e in refused["errors"]] == ["line 3.id"]
    assert_documented(refused, "Problem")

    status, bad = await post(stack, "/v1/broadcasts", {"message": "hi"})
    assert status == 400
    assert_documented(bad, "Problem")
