"""Hostile input over real sockets, before and after authentication: always a 4xx
``application/problem+json`` naming what was wrong, never a 5xx; never the ``Authorization``
header or a token echoed, never more than 100 characters of any request value; malformed
HTTP logged once at WARNING without a traceback, nothing at ERROR.

What aiohttp's client refuses to send (control bytes in headers, bad chunking, a broken
request line) goes over a raw socket (:func:`raw_exchange`).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_urldispatcher import _default_expect_handler

from tests.fixtures.environ import API_TOKEN, AUTH
from tests.fixtures.stack import Stack, open_backend, start_stack
from tgbroadcast.server.rest import protocol
from tgbroadcast.simulator import Simulator

TOKEN = API_TOKEN.encode()
INT64_MAX = 2**63 - 1
LONG = "x" * 1000
"""A request value longer than an error may repeat (100 characters)."""


@pytest.fixture
async def open_stack(simulator: Simulator, tmp_path: Path) -> AsyncIterator[Stack]:
    """The stack on SQLite, without the per-token rate limit (these tests send many requests;
    the limit has tests of its own)."""
    async with (
        open_backend("sqlite", tmp_path) as backend,
        start_stack(backend, simulator, {"TGB_SERVER_REQUESTS_PER_SECOND": "0"}) as stack,
    ):
        yield stack


@dataclass(frozen=True, slots=True)
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes
    raw: bytes

    def problem(self) -> Any:
        assert self.headers["content-type"].startswith("application/problem+json"), self.raw
        problem = json.loads(self.body)
        assert problem["status"] == self.status
        assert {"type", "title", "detail"} <= set(problem)
        return problem


async def raw_exchange(stack: Stack, request: bytes) -> RawAnswer:
    """Sends ``request`` as is and reads the answer until the server closes the connection
    (each request here says ``Connection: close`` or is one the server closes after)."""
    assert stack.running.api is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.running.api.http_port)
    try:
        writer.write(request)
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawAnswer(int(status_line.split()[1]), headers, body, raw)


def request_bytes(
    method: bytes, path: bytes, *headers: bytes, body: bytes = b"", auth: bool = True
) -> bytes:
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: 127.0.0.1"]
    if auth:
        lines.append(b"Authorization: Bearer " + TOKEN)
    lines.extend(headers)
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@contextmanager
def nothing_logged_at_error(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.INFO)
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
    assert all(API_TOKEN not in r.getMessage() for r in caplog.records)


def malformed_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and r.getMessage().startswith("malformed")
    ]


async def test_binary_authorization_is_401_not_500(
    open_stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """Bytes that are not ASCII (not UTF-8 either) in ``Authorization``: not our token."""
    with nothing_logged_at_error(caplog):
        for value in (
            b"Bearer \xff\xfe\xfd",
            bytes(range(0x80, 0x100)),
            b"Bearer " + TOKEN + b"\xff",
            b"\xc3\xa9\xc3",
        ):
            answer = await raw_exchange(
                open_stack,
                request_bytes(b"GET", b"/v1/users", b"Authorization: " + value, auth=False),
            )
            assert answer.status == 401, answer.raw
            assert answer.problem()["title"] == "Unauthorized"
            assert answer.headers["www-authenticate"].startswith("Bearer")
            assert TOKEN not in answer.raw
            assert value not in answer.raw


MALFORMED = {
    "control byte in Authorization": request_bytes(
        b"GET", b"/v1/users", b"Authorization: Bearer \xff\x00" + TOKEN, auth=False
    ),
    "space before a header's colon": request_bytes(
        b"GET", b"/v1/users", b"Authorization : Bearer " + TOKEN, auth=False
    ),
    "header name with a control byte": request_bytes(b"GET", b"/v1/users", b"X\x01Token: 1"),
    "broken request line": b"GET /v1/users HTTP/1.1 extra\r\nAuthorization: Bearer "
    + TOKEN
    + b"\r\n\r\n",
    "not HTTP": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + TOKEN + b"\r\n\r\n",
    "byte 0xff in the path": request_bytes(b"GET", b"/v1/users/\xff"),
    "header line too long": request_bytes(b"GET", b"/v1/users", b"X-Long: " + b"a" * 20_000),
    "two Content-Lengths": request_bytes(
        b"POST", b"/v1/users", b"Content-Length: 2", b"Content-Length: 3", body=b"{}"
    ),
    "bad chunk size": request_bytes(
        b"POST",
        b"/v1/users",
        b"Content-Type: application/json",
        b"Transfer-Encoding: chunked",
        body=b"zz\r\n{}\r\n0\r\n\r\n",
    ),
}


def fresh_malformed_log(monkeypatch: pytest.MonkeyPatch, clock: FrozenClock | None = None) -> None:
    """A new process-wide rate limit of malformed-request lines: the next one is written."""
    log = protocol.MalformedLog() if clock is None else protocol.MalformedLog(clock=clock)
    monkeypatch.setattr(protocol, "MALFORMED_LOG", log)


class FrozenClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_malformed_http_is_a_quiet_400_without_echo(
    open_stack: Stack, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    with nothing_logged_at_error(caplog):
        for name, request in MALFORMED.items():
            caplog.clear()
            fresh_malformed_log(monkeypatch)
            answer = await raw_exchange(open_stack, request)
            assert answer.status == 400, (name, answer.raw)
            assert answer.problem()["detail"] == "malformed HTTP request", name
            assert TOKEN not in answer.raw, name
            assert b"Authorization" not in answer.raw, name
            warnings = malformed_warnings(caplog)
            assert len(warnings) == 1, (name, [r.getMessage() for r in caplog.records])
            assert warnings[0].exc_info is None, name
            assert API_TOKEN not in str(warnings[0].__dict__), name


async def test_a_body_broken_off_mid_stream_is_a_400(
    open_stack: Stack, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bad chunking after a good first chunk, or a body that is not the gzip it claims: the
    parser or the handler's read notices it, whichever gets there first; a 400 and one
    WARNING either way."""
    json_type = b"Content-Type: application/json"
    requests = [
        request_bytes(
            b"POST",
            b"/v1/users",
            json_type,
            b"Transfer-Encoding: chunked",
            body=b'2\r\n{"\r\nzz\r\n',
        ),
        request_bytes(
            b"POST",
            b"/v1/users",
            json_type,
            b"Content-Encoding: gzip",
            b"Content-Length: 12",
            body=b"not gzip at!",
        ),
    ]
    with nothing_logged_at_error(caplog):
        for request in requests:
            caplog.clear()
            fresh_malformed_log(monkeypatch)
            answer = await raw_exchange(open_stack, request)
            assert answer.status == 400, answer.raw
            answer.problem()
            assert len(malformed_warnings(caplog)) == 1, caplog.records
            assert all(r.exc_info is None for r in malformed_warnings(caplog))


BURST = 50


async def test_a_burst_of_malformed_connections_writes_one_line_per_interval(
    open_stack: Stack, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many bad connections at once (the clock standing still: all within one interval) log
    one line; the next line, an interval later, counts those left out."""
    clock = FrozenClock()
    fresh_malformed_log(monkeypatch, clock)
    request = MALFORMED["broken request line"]
    with nothing_logged_at_error(caplog):
        answers = await asyncio.gather(*(raw_exchange(open_stack, request) for _ in range(BURST)))
        assert {answer.status for answer in answers} == {400}
        assert len(malformed_warnings(caplog)) == 1
        caplog.clear()
        clock.now += protocol.MALFORMED_LOG_INTERVAL
        await raw_exchange(open_stack, request)
        [line] = malformed_warnings(caplog)
        assert line.suppressed == BURST - 1  # type: ignore[attr-defined]


async def test_the_aiohttp_internals_the_quiet_handler_relies_on_are_there() -> None:
    """``server/rest/protocol.py`` overrides ``handle_error`` and remakes aiohttp's low-level
    server from its private fields: a new aiohttp that changes them must fail here, loudly,
    not quietly bring back tracebacks and echoed headers."""
    parameters = list(inspect.signature(RequestHandler.handle_error).parameters)
    assert parameters == ["self", "request", "status", "exc", "message"]
    # server/rest/app.py's expect handler lets aiohttp's own send its 100 Continue.
    assert list(inspect.signature(_default_expect_handler).parameters) == ["request"]
    runner = protocol.ApiRunner(web.Application(), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        server = runner.server
        assert isinstance(server, web.Server)
        assert isinstance(server._loop, asyncio.AbstractEventLoop)
        assert isinstance(server._kwargs, dict)
        for name in ("request_handler", "request_factory", "handler_cancellation"):
            assert hasattr(server, name), name
        assert isinstance(server(), protocol.QuietRequestHandler)
    finally:
        await runner.cleanup()


async def send(
    stack: Stack,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    content_type: str | None = "application/json",
    **kwargs: Any,
) -> tuple[int, Any, aiohttp.ClientResponse]:
    """One request with the suite's token; the status, the decoded problem (or answer)."""
    headers = dict(AUTH)
    if content_type is not None:
        headers["Content-Type"] = content_type
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            stack.http_url + path,
            data=body,
            headers=headers,
            skip_auto_headers=["Content-Type"],
            **kwargs,
        ) as response,
    ):
        text = await response.text()
        assert response.status < 500, text
        assert API_TOKEN not in text
        if response.status >= 400:
            assert response.content_type == "application/problem+json", text
        return response.status, json.loads(text) if text else None, response


def fields(problem: Any) -> set[str]:
    return {e["field"] for e in problem["errors"]}


async def test_integers_beyond_64_bits_are_400_naming_the_field(
    open_stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    digits = "1" * 4401  # beyond Python's 4,300-digit limit for int(): was a 500
    cases = [
        ("/v1/users", f'{{"users": [{{"id": {digits}}}]}}', "users[0].id"),
        ("/v1/users", f'{{"users": [{{"id": 1}}, {{"id": {2**64}}}]}}', "users[1].id"),
        ("/v1/users", f'{{"users": [{{"id": {-(2**63) - 1}}}]}}', "users[0].id"),
        ("/send-message", f'{{"message": "hi", "user_ids": [1, {INT64_MAX + 1}]}}', "user_ids[1]"),
        (
            "/v1/broadcasts",
            '{"message": "hi", "user_ids": [1], "entities": '
            f'[{{"type": "bold", "offset": 0, "length": {digits}}}]}}',
            "entities[0].length",
        ),
        ("/v1/preview", f'{{"message": {{"message": "hi"}}, "user_id": {digits}}}', "user_id"),
    ]
    with nothing_logged_at_error(caplog):
        for path, body, field in cases:
            status, problem, _ = await send(open_stack, "POST", path, body=body.encode())
            assert status == 400, (path, field, problem)
            assert fields(problem) == {field}, problem
            assert "64-bit" in problem["errors"][0]["message"]
            assert len(problem["detail"]) < 200
        status, answer, _ = await send(
            open_stack, "POST", "/v1/users", body=f'{{"users": [{{"id": {INT64_MAX}}}]}}'.encode()
        )
        assert (status, answer) == (200, {"upserted": 1})


async def test_duplicate_json_keys_are_400_naming_them(
    open_stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    cases = [
        ("/v1/users", b'{"users": [], "users": [{"id": 1}]}', {"users"}),
        ("/v1/users", b'{"users": [{"id": 1}, {"id": 2, "tags": [], "id": 3}]}', {"users[1].id"}),
        (
            "/send-message",
            b'{"message": "hi", "all_users": true, "filter": {"tags": ["a"], "tags": ["b"]}}',
            {"filter.tags"},
        ),
        (
            "/v1/preview",
            b'{"message": {"message": "a", "message": "b"}, "user_id": 1}',
            {"message.message"},
        ),
    ]
    with nothing_logged_at_error(caplog):
        for path, body, expected in cases:
            status, problem, _ = await send(open_stack, "POST", path, body=body)
            assert status == 400, (path, problem)
            assert fields(problem) == expected, problem
            assert problem["errors"][0]["message"] == "is given more than once"
    page = await open_stack.running.backends.store.list_users(after=None, limit=10)
    assert page.users == ()


async def test_a_body_must_declare_its_content_type(
    open_stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    body = b'{"users": [{"id": 1}]}'
    with nothing_logged_at_error(caplog):
        for path in ("/v1/users", "/send-message", "/v1/broadcasts", "/v1/preview"):
            for content_type in (
                None,
                "text/plain",
                "application/x-www-form-urlencoded",
                "application/json; charset=latin-1",
                "application/problem+json",
            ):
                status, problem, _ = await send(
                    open_stack, "POST", path, body=body, content_type=content_type
                )
                assert status == 415, (path, content_type, problem)
                assert "application/json" in problem["detail"]
        status, problem, _ = await send(
            open_stack, "POST", "/v1/users/import", body=b"id\n1\n", content_type=None
        )
        assert status == 415, problem
        status, problem, _ = await send(
            open_stack, "POST", "/v1/users/import", body=b"id\n1\n", content_type=LONG
        )
        assert status == 415
        assert LONG[:101] not in problem["detail"]
        status, _, _ = await send(
            open_stack,
            "POST",
            "/v1/users",
            body=body,
            content_type="application/json; charset=UTF-8",
        )
        assert status == 200


NON_CANONICAL = [
    *("+1", "1_0", "\uff11", "\u0661", "\u0663", " 1", "1 ", "01", "-0"),
    *("0x1", "1e3", "1.0", LONG),
]
"""``int()`` takes the first nine (fullwidth and Arabic-Indic digits, spaces, ``_``)."""


async def test_non_canonical_numbers_in_paths_and_queries_are_400(
    open_stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    stack = open_stack
    assert (await send(stack, "POST", "/v1/users", body=b'{"users": [{"id": 1}]}'))[0] == 200
    with nothing_logged_at_error(caplog):
        for raw in [*NON_CANONICAL, str(INT64_MAX + 1), "9" * 5000]:
            for path, name in (
                (f"/v1/users/{raw}", "user_id"),
                (f"/v1/broadcasts/{raw}", "broadcast_id"),
                (f"/v1/broadcasts/{raw}/deliveries", "broadcast_id"),
            ):
                status, problem, _ = await send(stack, "GET", path)
                assert status == 400, (raw, path, problem)
                assert fields(problem) == {name}, problem
                assert raw[:101] not in json.dumps(problem, ensure_ascii=False) or len(raw) <= 100
            for path in ("/v1/users", "/v1/broadcasts", "/v1/broadcasts/1/deliveries"):
                status, problem, _ = await send(stack, "GET", path, params={"page_size": raw})
                assert status == 400, (raw, path, problem)
                assert fields(problem) == {"page_size"}, problem
        assert (await send(stack, "GET", "/v1/users/1"))[0] == 200
        assert (await send(stack, "GET", "/v1/users/-1001"))[0] == 404
        status, problem, _ = await send(stack, "GET", "/v1/users?page_size=")
        assert status == 400
        assert fields(problem) == {"page_size"}
        status, problem, _ = await send(stack, "GET", "/v1/users?page_size=1&page_size=2")
        assert status == 400
        assert fields(problem) == {"page_size"}
        status, problem, _ = await send(stack, "GET", "/v1/users?active_only=TRUE")
        assert status == 400
        assert fields(problem) == {"active_only"}


async def test_every_405_says_allow(open_stack: Stack) -> None:
    for method, path, allowed in [
        ("PUT", "/v1/users", {"GET", "POST"}),
        ("PATCH", "/v1/broadcasts/1", {"GET"}),
        ("DELETE", "/send-message", {"POST"}),
        ("GET", "/v1/broadcasts/1/pause", {"POST"}),
        ("POST", "/v1/users/1", {"GET", "DELETE"}),
    ]:
        status, problem, response = await send(open_stack, method, path)
        assert status == 405, (method, path)
        assert allowed <= set(response.headers["Allow"].split(",")), response.headers
        assert problem["status"] == 405


async def test_errors_echo_at_most_100_characters_of_a_value(
    open_stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    stack = open_stack
    cut = LONG[:101]
    bodies = [
        ("/v1/users", {"users": [{"id": 1, LONG: 1}]}),
        ("/send-message", {"message": "hi", "user_ids": [1], LONG: True}),
        ("/send-message", {"message": "hi", "user_ids": [1], "media_type": LONG}),
        ("/send-message", {"message": "hi", "user_ids": [1], "parse_mode": LONG}),
        ("/send-message", {"message": "hi", "user_ids": [1], "send_at": LONG}),
        ("/v1/users", {"users": [{"id": 1, "tags": [LONG]}]}),
        ("/v1/preview", {"message": {"message": "{" + LONG + "}", "personalize": True}}),
    ]
    with nothing_logged_at_error(caplog):
        for path, payload in bodies:
            status, problem, _ = await send(stack, "POST", path, body=json.dumps(payload).encode())
            assert status == 400, (path, problem)
            assert cut not in json.dumps(problem), (path, problem)
        for path, query in [
            ("/v1/users", {LONG: "1"}),
            ("/v1/users", {"tag": LONG}),
            ("/v1/broadcasts", {"status": LONG}),
            ("/v1/broadcasts/1/deliveries", {"outcome": LONG}),
            ("/v1/users", {"page_token": LONG}),
        ]:
            status, problem, _ = await send(stack, "GET", path, params=query)
            assert status == 400, (path, problem)
            assert cut not in json.dumps(problem), (path, problem)
        status, problem, _ = await send(
            stack,
            "POST",
            "/v1/users/import",
            body=f"id,username\n{LONG},x\n".encode(),
            content_type="text/csv",
        )
        assert status == 400
        assert cut not in json.dumps(problem), problem


async def test_json_that_python_would_reinterpret_is_refused(open_stack: Stack) -> None:
    for body, field in [
        (b'{"users": [{"id": NaN}]}', "body"),
        (b'{"users": [{"id": Infinity}]}', "body"),
        ('{"users": [{"id": 1}]}'.encode("utf-16"), "body"),
        (b'{"users": [{"id": 1, "username": "\xff"}]}', "body"),
        (b"\xef\xbb\xbf" + b'{"users": []}', "body"),
    ]:
        status, problem, _ = await send(open_stack, "POST", "/v1/users", body=body)
        assert status == 400, (body, problem)
        assert fields(problem) == {field}, problem


async def test_form_fields_holding_json_are_read_as_strictly(open_stack: Stack) -> None:
    """``multipart/form-data`` sends: a form field's JSON text is held to a JSON body's rules;
    a body that is not the multipart it claims is a 400, not a 500."""
    for field, text, expected in [
        ("user_ids", f"[1, {'1' * 4401}]", "user_ids[1]"),
        ("filter", '{"tags": ["a"], "tags": ["b"]}', "filter.tags"),
        ("user_ids", "[1,", "user_ids"),
    ]:
        form = aiohttp.FormData(default_to_multipart=True)
        form.add_field("message", "hi")
        form.add_field(field, text)
        async with (
            aiohttp.ClientSession(headers=AUTH) as session,
            session.post(open_stack.http_url + "/v1/broadcasts", data=form) as response,
        ):
            assert response.status == 400, await response.text()
            problem = await response.json(content_type=None)
        assert expected in fields(problem), problem
    # A text field's bytes are UTF-8 or refused (never sent to Telegram with replacements).
    status, problem, _ = await send(
        open_stack,
        "POST",
        "/send-message",
        body=b'--B\r\nContent-Disposition: form-data; name="message"\r\n\r\nbad \xff\xfe utf8\r\n'
        b'--B\r\nContent-Disposition: form-data; name="user_ids"\r\n\r\n[1]\r\n--B--\r\n',
        content_type="multipart/form-data; boundary=B",
    )
    assert status == 400, problem
    assert fields(problem) == {"message"}, problem
    for content_type in ("multipart/form-data", "multipart/form-data; boundary=zzz"):
        status, problem, _ = await send(
            open_stack, "POST", "/v1/broadcasts", body=b"--x\r\n", content_type=content_type
        )
        assert status == 400, problem
        assert fields(problem) == {"body"}


async def test_csv_ids_are_canonical_numbers_too(open_stack: Stack) -> None:
    for raw in ("+1", "1_0", "\uff11", "01", "9" * 5000):
        status, problem, _ = await send(
            open_stack,
            "POST",
            "/v1/users/import",
            body=f"id\n{raw}\n".encode(),
            content_type="text/csv",
        )
        assert status == 400, (raw, problem)
        assert fields(problem) == {"line 2.id"}, problem
        assert problem["imported"] == 0
