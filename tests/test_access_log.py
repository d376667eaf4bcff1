"""One access-log line per HTTP request and per RPC (method, route, status, duration, token
name, client address; never a token) — refusals by the guards included — and the caller known
inside handlers on both transports, streams included
(:func:`tgbroadcast.server.auth.current_caller_name`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web
from grpc_health.v1 import health_pb2

from tests.fixtures.stack import API_TOKEN, Backend, Stack, on_sqlite, start_stack
from tgbroadcast.server.auth import CALLER, TokenCheck, current_caller_name
from tgbroadcast.server.grpc.interceptors import AuthInterceptor
from tgbroadcast.server.guards import AUTH_FAILURES, Guards
from tgbroadcast.server.rest import guards
from tgbroadcast.simulator import Simulator
from tgbroadcast.v1 import broadcast_pb2 as pb

WRONG_TOKEN = "wrong-token-that-must-not-be-logged"
FIELDS = ("transport", "method", "status", "duration_ms", "token_name", "client")


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        {key: getattr(record, key, None) for key in (*FIELDS, "route")}
        for record in caplog.records
        if record.name == "tgbroadcast.access"
    ]


def assert_no_token_logged(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        text = f"{record.getMessage()} {record.__dict__}"
        assert API_TOKEN not in text
        assert WRONG_TOKEN not in text


@on_sqlite
async def test_every_http_request_is_logged_once_with_its_route_template(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tgbroadcast.access")
    name = stack.settings.server.api_tokens[0].name
    long_path = "/x" * 200
    async with aiohttp.ClientSession() as session:
        for path, headers in [
            ("/v1/broadcasts/12345", stack.auth),
            ("/v1/broadcasts", {"Authorization": f"Bearer {WRONG_TOKEN}"}),
            (long_path, stack.auth),
            ("/livez", {}),
        ]:
            async with session.get(stack.http_url + path, headers=headers) as answer:
                await answer.read()
    lines = access_lines(caplog)
    assert [(line["route"], line["status"], line["token_name"]) for line in lines] == [
        ("/v1/broadcasts/{broadcast_id}", 404, name),
        ("/v1/broadcasts", 401, ""),
        (long_path[:100], 404, name),
        ("/livez", 200, ""),
    ]
    for line in lines:
        assert (line["transport"], line["method"], line["client"]) == ("http", "GET", "127.0.0.1")
        assert isinstance(line["duration_ms"], float)
        assert line["duration_ms"] >= 0
    assert_no_token_logged(caplog)


@on_sqlite
async def test_every_rpc_is_logged_once_with_its_status(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tgbroadcast.access")
    name = stack.settings.server.api_tokens[0].name
    async with stack.stub() as stub:
        await stub.ListBroadcasts(pb.ListBroadcastsRequest(), metadata=stack.metadata)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.GetBroadcast(
                pb.GetBroadcastRequest(broadcast_id=12345), metadata=stack.metadata
            )
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.ListBroadcasts(
                pb.ListBroadcastsRequest(), metadata=(("authorization", f"Bearer {WRONG_TOKEN}"),)
            )
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        await check(health_pb2.HealthCheckRequest())
    service = "/tgbroadcast.v1.BroadcastService"
    lines = access_lines(caplog)
    assert [(line["method"], line["status"], line["token_name"]) for line in lines] == [
        (f"{service}/ListBroadcasts", "OK", name),
        (f"{service}/GetBroadcast", "NOT_FOUND", name),
        (f"{service}/ListBroadcasts", "UNAUTHENTICATED", ""),
        ("/grpc.health.v1.Health/Check", "OK", ""),
    ]
    for line in lines:
        assert (line["transport"], line["client"]) == ("grpc", "127.0.0.1")
        assert line["duration_ms"] >= 0
    assert_no_token_logged(caplog)


TOKENS = TokenCheck([("alice", "alice-secret-token"), ("bob", "bob-secret-token")])


async def who_http(request: web.Request) -> web.Response:
    caller = CALLER.get()
    return web.json_response(
        {"name": current_caller_name(), "address": None if caller is None else caller.address}
    )


@asynccontextmanager
async def http_server() -> AsyncIterator[str]:
    app = web.Application(middlewares=[guards.access_log_middleware, guards.guard_middleware])
    app[guards.GUARDS_KEY] = Guards()
    app[guards.TOKENS_KEY] = TOKENS
    app[guards.PUBLIC_PATHS_KEY] = frozenset({"/public"})
    app.router.add_get("/who", who_http)
    app.router.add_get("/public", who_http)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_rest_handlers_know_their_caller() -> None:
    async with http_server() as url, aiohttp.ClientSession() as session:
        for token, name in [("alice-secret-token", "alice"), ("bob-secret-token", "bob")]:
            headers = {"Authorization": f"Bearer {token}"}
            async with session.get(url + "/who", headers=headers) as answer:
                assert await answer.json() == {"name": name, "address": "127.0.0.1"}
        async with session.get(url + "/public") as answer:
            assert await answer.json() == {"name": "", "address": None}


async def who_unary(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return current_caller_name().encode()


async def who_stream(
    request: bytes, context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[bytes]:
    for _ in range(2):
        caller = CALLER.get()
        assert caller is not None
        yield f"{caller.token_name}@{caller.address}".encode()


@asynccontextmanager
async def grpc_server() -> AsyncIterator[str]:
    server = grpc.aio.server(interceptors=[AuthInterceptor(TOKENS, rules=None)])  # no scopes
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "test.Who",
                {
                    "Unary": grpc.unary_unary_rpc_method_handler(who_unary),
                    "Stream": grpc.unary_stream_rpc_method_handler(who_stream),
                },
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def test_grpc_servicers_know_their_caller() -> None:
    async with grpc_server() as target, grpc.aio.insecure_channel(target) as channel:
        unary: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/test.Who/Unary"
        )
        stream: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(
            "/test.Who/Stream"
        )
        for token, name in [("alice-secret-token", "alice"), ("bob-secret-token", "bob")]:
            metadata = (("authorization", f"Bearer {token}"),)
            assert await unary(b"", metadata=metadata) == name.encode()
            answers = [answer async for answer in stream(b"", metadata=metadata)]
            assert answers == [f"{name}@127.0.0.1".encode()] * 2
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await unary(b"")
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


@dataclass(frozen=True, slots=True)
class Refused:
    """A refusal by the guards: the stack's settings, the tokens sent in turn (the last one is
    refused) and what the access log must say of it."""

    overrides: Mapping[str, str]
    tokens: tuple[str, ...]
    http: int
    grpc: str
    named: bool
    """Whether the line names the token (it was right, but over its rate)."""


REFUSED = {
    "forbidden": Refused(
        {"TGB_SERVER_ALLOWED_NETWORKS": "127.0.0.2/32"},
        (API_TOKEN,),
        403,
        "PERMISSION_DENIED",
        named=False,
    ),
    "unauthenticated": Refused({}, (WRONG_TOKEN,), 401, "UNAUTHENTICATED", named=False),
    "over the rate": Refused(
        {"TGB_SERVER_REQUESTS_PER_SECOND": "0.1"},
        (API_TOKEN, API_TOKEN),
        429,
        "RESOURCE_EXHAUSTED",
        named=True,
    ),
    "throttled": Refused(
        {}, (WRONG_TOKEN,) * AUTH_FAILURES + (API_TOKEN,), 429, "RESOURCE_EXHAUSTED", named=False
    ),
}


async def list_over_http(stack: Stack, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(stack.http_url + "/v1/broadcasts", headers=headers) as answer,
    ):
        await answer.read()
        return answer.status


async def list_over_grpc(stack: Stack, token: str) -> str:
    async with stack.stub() as stub:
        try:
            await stub.ListBroadcasts(
                pb.ListBroadcastsRequest(), metadata=(("authorization", f"Bearer {token}"),)
            )
        except grpc.aio.AioRpcError as error:
            return error.code().name
        return "OK"


@on_sqlite
@pytest.mark.parametrize("transport", ["http", "grpc"])
@pytest.mark.parametrize("case", list(REFUSED))
async def test_refusals_are_logged_with_their_status(
    backend: Backend,
    simulator: Simulator,
    caplog: pytest.LogCaptureFixture,
    case: str,
    transport: str,
) -> None:
    refused = REFUSED[case]
    caplog.set_level(logging.INFO, logger="tgbroadcast.access")
    async with start_stack(backend, simulator, refused.overrides) as stack:
        name = stack.settings.server.api_tokens[0].name
        call = list_over_http if transport == "http" else list_over_grpc
        answers = [await call(stack, token) for token in refused.tokens]
    expected = refused.http if transport == "http" else refused.grpc
    assert answers[-1] == expected
    lines = [line for line in access_lines(caplog) if line["transport"] == transport]
    assert len(lines) == len(refused.tokens)
    assert [line["status"] for line in lines] == answers
    assert lines[-1]["token_name"] == (name if refused.named else "")
    assert lines[-1]["client"] == "127.0.0.1"
    assert_no_token_logged(caplog)


WATCHES = (
    "/tgbroadcast.v1.BroadcastService/WatchBroadcast",
    "/v1/broadcasts/{broadcast_id}/events",
)


class WatchLogged(logging.Handler):
    """Set once a watch stream's access line is written: an SSE handler writes its last
    bytes itself, so the client may have them before the line is written."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "method", None) in WATCHES or getattr(record, "route", None) in WATCHES:
            self.seen.set()


async def watch_over_grpc(stack: Stack, broadcast_id: int) -> None:
    async with stack.stub() as stub:
        request = pb.WatchBroadcastRequest(broadcast_id=broadcast_id)
        messages = [
            message async for message in stub.WatchBroadcast(request, metadata=stack.metadata)
        ]
    assert messages[-1].progress.status == pb.BROADCAST_STATUS_COMPLETED


async def watch_over_http(stack: Stack, broadcast_id: int) -> None:
    url = f"{stack.http_url}/v1/broadcasts/{broadcast_id}/events"
    async with aiohttp.ClientSession() as session, session.get(url, headers=stack.auth) as answer:
        assert answer.status == 200
        assert "event: end" in await answer.text()  # the stream ends after its closing event


@on_sqlite
@pytest.mark.parametrize("transport", ["http", "grpc"])
async def test_a_watch_stream_runs_with_its_caller_and_is_logged_with_its_token_name(
    stack: Stack,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    transport: str,
) -> None:
    """The real WatchBroadcast and SSE handlers: the core's ``watch`` is called with
    :data:`CALLER` set (the SSE stream follows in a task of its own, which inherits it)."""
    name = stack.settings.server.api_tokens[0].name
    assert stack.running.api is not None
    service = stack.running.api.service
    callers: list[str] = []
    original = service.watch

    def watch(broadcast_id: int, **options: Any) -> Any:
        callers.append(current_caller_name())
        return original(broadcast_id, **options)

    monkeypatch.setattr(service, "watch", watch)
    async with stack.stub() as stub:
        sent = await stub.SendMessage(
            pb.SendMessageRequest(message="hi", user_ids=[1]), metadata=stack.metadata
        )
    caplog.set_level(logging.INFO, logger="tgbroadcast.access")
    logged = WatchLogged()
    access = logging.getLogger("tgbroadcast.access")
    access.addHandler(logged)
    try:
        if transport == "grpc":
            await watch_over_grpc(stack, sent.broadcast_id)
        else:
            await watch_over_http(stack, sent.broadcast_id)
        async with asyncio.timeout(stack.settings.server.shutdown_grace):
            await logged.seen.wait()
    finally:
        access.removeHandler(logged)
    assert callers == [name]
    lines = access_lines(caplog)
    watched = [line for line in lines if line["method"] in WATCHES or line["route"] in WATCHES]
    assert len(watched) == 1
    assert (watched[0]["transport"], watched[0]["token_name"]) == (transport, name)
    assert watched[0]["status"] in ("OK", 200)
    assert_no_token_logged(caplog)
