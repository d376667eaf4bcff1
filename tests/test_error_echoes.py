"""What an error repeats of the request, and whose fault it is: a bot token sent in the wrong
field is not repeated; a client hanging up mid-body is its own doing, not the backends'."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import aiohttp
import grpc
import pytest

from tests.fixtures.environ import API_TOKEN
from tests.fixtures.grpc_details import bad_request
from tests.fixtures.nats import wait_until
from tests.fixtures.stack import Stack
from tests.fixtures.telegram import BOT_SECRET, BOT_TOKEN
from tests.test_hostile_input import (
    TOKEN,
    fresh_malformed_log,
    open_stack,
    raw_exchange,
    request_bytes,
    send,
)
from tgbroadcast.server.rest import protocol
from tgbroadcast.v1 import broadcast_pb2 as pb

__all__ = ["open_stack"]  # the fixture


async def test_a_client_hanging_up_mid_body_is_its_fault_not_a_503(
    open_stack: Stack, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body cut off by the client closing its connection (the server's read of it fails
    as a connection reset) is the client's doing: a 400 in the access log and metrics, never
    "backend unavailable" and a 503, an operator's alarm for the database or the queue."""
    caplog.set_level(logging.INFO)
    fresh_malformed_log(monkeypatch)
    assert open_stack.running.api is not None
    _, writer = await asyncio.open_connection("127.0.0.1", open_stack.running.api.http_port)
    head = request_bytes(
        b"POST", b"/send-message", b"Content-Type: application/json", b"Content-Length: 1000"
    )
    writer.write(head + b'{"message":')
    await writer.drain()
    writer.close()

    def answered() -> list[logging.LogRecord]:
        return [
            r
            for r in caplog.records
            if r.name == "tgbroadcast.access" and getattr(r, "route", "") == "/send-message"
        ]

    async def seen() -> bool:
        return bool(answered())

    await wait_until(seen)
    assert [getattr(r, "status", None) for r in answered()] == [400]
    assert not [r for r in caplog.records if "unavailable" in r.getMessage()]


async def test_a_bot_token_sent_in_the_wrong_field_is_not_repeated(open_stack: Stack) -> None:
    """A bot token where a value or a field's name goes: the error names the field and says
    what is wrong, without the token (over REST and gRPC)."""
    for payload in (
        {"message": "hi", "user_ids": [1], "parse_mode": BOT_TOKEN},
        {"message": "hi", "user_ids": [1], "media_type": BOT_TOKEN},
        {"message": "hi", "user_ids": [1], BOT_TOKEN: True},
    ):
        status, problem, _ = await send(
            open_stack, "POST", "/send-message", body=json.dumps(payload).encode()
        )
        assert status == 400, problem
        assert BOT_SECRET not in json.dumps(problem), problem
    async with open_stack.stub() as stub:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.SendMessage(
                pb.SendMessageRequest(message="hi", user_ids=[1], bot=BOT_TOKEN),
                metadata=open_stack.metadata,
            )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert BOT_SECRET not in str(raised.value.details()) + repr(bad_request(raised.value))


async def test_a_body_declared_over_the_limit_is_refused_before_it_is_sent(
    open_stack: Stack,
) -> None:
    """``Content-Length`` over ``server.max_body_bytes``: 413 at once, from the headers — with
    ``Expect: 100-continue`` instead of the ``100 Continue`` that would have the client send it
    all first."""
    for expect in ((b"Expect: 100-continue",), ()):
        request = request_bytes(
            b"POST",
            b"/send-message",
            b"Content-Type: application/json",
            b"Content-Length: 99999999999",
            *expect,
        )
        assert open_stack.running.api is not None
        port = open_stack.running.api.http_port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request)  # and no byte of the body, ever: the answer comes first
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 413 "), head
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            problem = json.loads(await reader.readexactly(length))
        finally:
            writer.close()
        assert "larger than the limit" in problem["detail"]


async def test_a_content_encoding_nobody_decodes_is_415(open_stack: Stack) -> None:
    """aiohttp decodes gzip and deflate; any other body was read as if plain."""
    body = json.dumps({"message": "hi", "user_ids": [1]}).encode()
    request = request_bytes(
        b"POST",
        b"/send-message",
        b"Content-Type: application/json",
        b"Content-Encoding: zstd-bogus",
        b"Content-Length: %d" % len(body),
        body=body,
    )
    answer = await raw_exchange(open_stack, request)
    assert answer.status == 415, answer.raw
    assert "zstd-bogus" in answer.problem()["detail"]
    assert open_stack.simulator.calls == ()


async def test_br_and_zstd_are_415_unless_aiohttp_can_decode_them(open_stack: Stack) -> None:
    """Without their packages aiohttp would fail a well-made body as malformed (a 400)."""
    body = json.dumps({"message": "hi", "user_ids": [1]}).encode()
    for encoding in (b"br", b"zstd"):
        if encoding.decode() in protocol.DECODED:  # its package is installed
            continue
        request = request_bytes(
            b"POST",
            b"/send-message",
            b"Content-Type: application/json",
            b"Content-Encoding: " + encoding,
            b"Content-Length: %d" % len(body),
            body=body,
        )
        answer = await raw_exchange(open_stack, request)
        assert answer.status == 415, answer.raw
        accepted = answer.problem()["detail"].rpartition("is not accepted: ")[2].split(", ")
        assert {"gzip", "deflate"} <= set(accepted), accepted
        assert encoding.decode() not in accepted


async def test_a_head_of_a_stream_is_its_headers_alone(open_stack: Stack) -> None:
    """aiohttp writes a streamed body to a HEAD too: the next answer on the connection would
    start inside it (a proxy's pooled connection poisoned). A HEAD gets the headers alone."""
    status, accepted, _ = await send(
        open_stack,
        "POST",
        "/send-message",
        body=json.dumps({"message": "hi", "user_ids": [5]}).encode(),
    )
    assert status == 202, accepted
    broadcast = f"/v1/broadcasts/{accepted['broadcast_id']}".encode()
    for path, kind in (
        (broadcast + b"/events", b"text/event-stream"),
        (b"/v1/broadcasts/events", b"text/event-stream"),
        (broadcast + b"/deliveries.csv", b"text/csv"),
    ):
        head = b"HEAD " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
        pipelined = head + TOKEN + b"\r\n\r\n" + request_bytes(b"GET", broadcast)
        answer = await raw_exchange(open_stack, pipelined)
        assert answer.status == 200, answer.raw
        assert answer.headers["content-type"].encode().startswith(kind), path
        assert answer.body.startswith(b"HTTP/1.1 200 OK\r\n"), (path, answer.body[:80])
        assert b'"broadcast_id"' in answer.body, path


async def test_an_import_line_longer_than_the_read_buffer_is_named(open_stack: Stack) -> None:
    """Not "the request body is malformed": the line, and that it is too long."""
    body = io.BytesIO(b"id,username\n1,a\n7," + b"x" * (2 * 1024 * 1024) + b"\n")
    headers = {"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "text/csv"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{open_stack.http_url}/v1/users/import", data=body, headers=headers) as r,
    ):
        problem = await r.json(content_type=None)
    assert r.status == 400, problem
    assert [(e["field"], e["message"]) for e in problem["errors"]] == [("line 3", "is too long")]
