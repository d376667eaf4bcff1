"""One access-log line per HTTP request and per RPC (method, route, status, duration, token
name, client address; never a token), and the caller known inside handlers on both transports
(:func:`tgbroadcast.server.auth.current_caller_name`)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web
from grpc_health.v1 import health_pb2

from tests.fixtures.stack import API_TOKEN, Stack, on_sqlite
from tgbroadcast.server.auth import CALLER, TokenCheck, current_caller_name
from tgbroadcast.server.grpc.interceptors import AuthInterceptor
from tgbroadcast.server.guards import Guards
from tgbroadcast.server.rest import guards
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
    server = grpc.aio.server(interceptors=[AuthInterceptor(TOKENS)])
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
