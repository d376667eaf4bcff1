"""OpenTelemetry tracing (tgbroadcast.core.tracing): one trace from the API call through the
store and the dispatcher, across NATS, to the worker's Telegram calls; nothing when it is off.

The whole service runs in the test's process (``sqlite_stack``) with the SDK's in-memory
exporter; the jobs' NATS messages are read by a plain subscriber on the jobs subject.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import nats
import pytest
from nats.aio.msg import Msg
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import tgbroadcast.core.tracing as tracing
from tests.fixtures.environ import API_TOKEN, SECOND_API_TOKEN
from tests.fixtures.rest import post
from tests.fixtures.stack import Stack
from tests.fixtures.telegram import BOT_TOKEN
from tests.fixtures.watching import assert_watch_complete, watch
from tgbroadcast.core.domain.errors import ConfigError
from tgbroadcast.core.queue import QueueNames
from tgbroadcast.v1 import broadcast_pb2 as pb

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_PARENT = f"00-{CALLER_TRACE}-b7ad6b7169203331-01"
"""A W3C ``traceparent`` of a caller that traces its own work."""
SECRETS = (BOT_TOKEN, BOT_TOKEN.split(":", 1)[1], API_TOKEN, SECOND_API_TOKEN)


class _Ended(SpanProcessor):
    """Wakes the test whenever a span ends (spans end in the event loop's thread)."""

    def __init__(self) -> None:
        self.ended = asyncio.Event()

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.set()


@dataclass(frozen=True, slots=True)
class Recorded:
    exporter: InMemorySpanExporter
    ended: asyncio.Event

    async def until(self, done: Callable[[list[ReadableSpan]], bool]) -> list[ReadableSpan]:
        """The finished spans, once ``done`` holds for them; a failure naming the spans that
        did end if it does not within a minute (far beyond what any machine takes: a wait that
        cannot end otherwise says what it saw, not just that the test timed out)."""
        try:
            async with asyncio.timeout(60):
                while not done(spans := list(self.exporter.get_finished_spans())):
                    self.ended.clear()
                    await self.ended.wait()
        except TimeoutError:
            ended = Counter(span.name for span in self.exporter.get_finished_spans())
            pytest.fail(f"the awaited spans did not end; these did: {dict(ended)}")
        return spans


@pytest.fixture
async def recorded() -> AsyncIterator[Recorded]:
    exporter = InMemorySpanExporter()
    notifier = _Ended()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.add_span_processor(notifier)
    tracing.use(provider)
    try:
        yield Recorded(exporter=exporter, ended=notifier.ended)
    finally:
        tracing.use(None)
        provider.shutdown()


@asynccontextmanager
async def job_messages(stack: Stack) -> AsyncIterator[asyncio.Queue[Msg]]:
    """Every job message published while inside (free tier), as a plain subscriber sees it."""
    url = stack.settings.nats_url_file.read_text(encoding="utf-8").strip()
    received: asyncio.Queue[Msg] = asyncio.Queue()
    nc = await nats.connect(url)
    try:

        async def on_message(msg: Msg) -> None:
            received.put_nowait(msg)

        await nc.subscribe(QueueNames(stack.settings.nats.prefix).jobs_subject, cb=on_message)
        await nc.flush()
        yield received
    finally:
        await nc.close()


async def next_job(messages: asyncio.Queue[Msg]) -> Msg:
    """The next job message; a failure saying so if none comes within a minute."""
    try:
        async with asyncio.timeout(60):
            return await messages.get()
    except TimeoutError:
        pytest.fail("no job message was published")


def _of(spans: Sequence[ReadableSpan], broadcast_id: int, name: str) -> list[ReadableSpan]:
    return [
        s
        for s in spans
        if s.name == name and (s.attributes or {}).get(tracing.BROADCAST_ID) == broadcast_id
    ]


def _delivered(broadcast_id: int, recipients: int) -> Callable[[list[ReadableSpan]], bool]:
    """Whether the job's span and every recipient's Telegram call ended."""

    def done(spans: list[ReadableSpan]) -> bool:
        return (
            len(_of(spans, broadcast_id, "telegram sendMessage")) == recipients
            and len(_of(spans, broadcast_id, "tgbroadcast.job")) == 1
        )

    return done


def assert_one_trace(
    spans: list[ReadableSpan], broadcast_id: int, api_name: str, job_message: Msg
) -> ReadableSpan:
    """The API call's span is the root of one trace holding the store's write, the dispatch,
    the worker's job (its parent read from the message's headers) and one Telegram call per
    recipient; returns the API call's span."""
    api = _of(spans, broadcast_id, api_name)
    [api_span] = api
    assert api_span.kind is SpanKind.SERVER
    assert api_span.context is not None
    trace_id = api_span.context.trace_id
    in_trace = [s for s in spans if s.context is not None and s.context.trace_id == trace_id]

    [store] = [s for s in in_trace if s.name == "tgbroadcast.store.create_broadcast"]
    assert store.parent is not None
    assert store.parent.span_id == api_span.context.span_id
    [dispatch] = _of(in_trace, broadcast_id, "tgbroadcast.dispatch")
    assert dispatch.parent is not None
    assert dispatch.parent.span_id == api_span.context.span_id
    assert dispatch.context is not None

    # The job's NATS message carried the dispatcher's span, and the worker continued it.
    assert job_message.headers is not None
    traceparent = job_message.headers["traceparent"]
    assert traceparent.startswith(f"00-{trace_id:032x}-{dispatch.context.span_id:016x}-")
    [job] = _of(in_trace, broadcast_id, "tgbroadcast.job")
    assert job.kind is SpanKind.CONSUMER
    assert job.parent is not None
    assert job.parent.is_remote
    assert job.parent.span_id == dispatch.context.span_id
    assert job.context is not None
    assert (job.attributes or {})["tgbroadcast.recipients"] == 3

    calls = _of(in_trace, broadcast_id, "telegram sendMessage")
    assert len(calls) == 3  # one per recipient
    for call in calls:
        assert call.kind is SpanKind.CLIENT
        assert call.parent is not None
        assert call.parent.span_id == job.context.span_id
        assert (call.attributes or {})["telegram.method"] == "sendMessage"
        assert call.status.status_code is not StatusCode.ERROR
    return api_span


def assert_no_secrets(spans: list[ReadableSpan]) -> None:
    """No token in any span's name, attribute, status or event."""
    texts = [s.name for s in spans]
    for s in spans:
        texts += [f"{key}={value!r}" for key, value in (s.attributes or {}).items()]
        texts.append(s.status.description or "")
        texts += [f"{e.name} {dict(e.attributes or {})}" for e in s.events]
        texts.append(str(s.resource.attributes))
    leaks = [text for text in texts for secret in SECRETS if secret in text]
    assert leaks == []


async def test_a_grpc_send_is_one_trace_to_the_telegram_calls(
    recorded: Recorded, sqlite_stack: Stack
) -> None:
    stack = sqlite_stack
    async with job_messages(stack) as messages, stack.stub() as stub:
        response = await stub.SendMessage(
            pb.SendMessageRequest(message="Traced", user_ids=[31, 32, 33]),
            metadata=stack.metadata,
        )
        job_message = await next_job(messages)
    broadcast_id = response.broadcast_id
    assert_watch_complete(await watch(stack, broadcast_id), {31, 32, 33})
    spans = await recorded.until(_delivered(broadcast_id, 3))

    name = "tgbroadcast.v1.BroadcastService/SendMessage"
    api = assert_one_trace(spans, broadcast_id, name, job_message)
    assert api.parent is None  # the caller sent no trace: the API call starts one
    attributes = api.attributes or {}
    assert attributes["rpc.system"] == "grpc"
    assert attributes["rpc.method"] == "SendMessage"
    assert attributes["rpc.grpc.status_code"] == 0
    assert_no_secrets(spans)


async def test_a_rest_send_continues_the_callers_trace(
    recorded: Recorded, sqlite_stack: Stack
) -> None:
    stack = sqlite_stack
    async with job_messages(stack) as messages:
        status, body = await post(
            stack,
            "/send-message",
            {"message": "Traced", "user_ids": [41, 42, 43]},
            headers={**stack.auth, "traceparent": CALLER_PARENT},
        )
        assert status == 202
        job_message = await next_job(messages)
    broadcast_id = body["broadcast_id"]
    assert_watch_complete(await watch(stack, broadcast_id), {41, 42, 43})
    spans = await recorded.until(_delivered(broadcast_id, 3))

    api = assert_one_trace(spans, broadcast_id, "POST /send-message", job_message)
    assert api.context is not None
    assert f"{api.context.trace_id:032x}" == CALLER_TRACE
    assert api.parent is not None
    assert api.parent.is_remote
    attributes = api.attributes or {}
    assert attributes["http.route"] == "/send-message"
    assert attributes["http.response.status_code"] == 202
    assert_no_secrets(spans)


async def test_a_refused_request_is_not_a_failed_span(
    recorded: Recorded, sqlite_stack: Stack
) -> None:
    status, _ = await post(sqlite_stack, "/send-message", {"message": "", "user_ids": [1]})
    assert status == 400
    [span] = await recorded.until(lambda spans: len(spans) >= 1)
    assert span.name == "POST /send-message"
    assert (span.attributes or {})["http.response.status_code"] == 400
    assert span.status.status_code is StatusCode.UNSET


async def test_nothing_is_traced_when_the_sdk_is_disabled(
    monkeypatch: pytest.MonkeyPatch, sqlite_stack: Stack
) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert tracing.setup("tgbroadcast") is None
    assert not tracing.enabled()
    stack = sqlite_stack
    async with job_messages(stack) as messages:
        # A caller's trace is not passed on either: nothing of tracing runs.
        status, body = await post(
            stack,
            "/send-message",
            {"message": "Not traced", "user_ids": [51, 52]},
            headers={**stack.auth, "traceparent": CALLER_PARENT},
        )
        assert status == 202
        job_message = await next_job(messages)
    assert_watch_complete(await watch(stack, body["broadcast_id"]), {51, 52})
    assert job_message.headers is not None
    assert "traceparent" not in job_message.headers
    assert tracing.headers() == {}


@pytest.fixture
def otel_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No OTEL_* variable from the machine running the tests; tracing off afterwards."""
    for name in (
        "OTEL_SDK_DISABLED",
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_TRACES_EXPORTER",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ):
        monkeypatch.delenv(name, raising=False)
    try:
        yield monkeypatch
    finally:
        tracing.use(None)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}, "tgbroadcast-worker"),  # OTLP
        ({"OTEL_SERVICE_NAME": "broadcasts-eu", "OTEL_TRACES_EXPORTER": "none"}, "broadcasts-eu"),
        (
            {
                "OTEL_RESOURCE_ATTRIBUTES": "service.name=eu,deployment.environment=prod",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9/v1/traces",
            },
            "eu",
        ),
        ({"OTEL_TRACES_EXPORTER": "console"}, "tgbroadcast-worker"),
    ],
)
def test_setup_follows_the_otel_environment(
    otel_environ: pytest.MonkeyPatch, environ: dict[str, str], expected: str
) -> None:
    for name, value in environ.items():
        otel_environ.setenv(name, value)
    provider = tracing.setup("tgbroadcast-worker")
    assert provider is not None
    try:
        assert tracing.enabled()
        assert provider.resource.attributes["service.name"] == expected
    finally:
        provider.shutdown()  # nothing was recorded: nothing is exported


def test_without_a_destination_tracing_stays_off(otel_environ: pytest.MonkeyPatch) -> None:
    """The extra installed but no collector named: nothing set up, nothing exported."""
    assert tracing.setup("tgbroadcast-server") is None
    assert not tracing.enabled()


def test_setup_refuses_an_exporter_that_is_not_installed(
    otel_environ: pytest.MonkeyPatch,
) -> None:
    otel_environ.setenv("OTEL_TRACES_EXPORTER", "no-such-exporter")
    with pytest.raises(ConfigError, match="no-such-exporter"):
        tracing.setup("tgbroadcast-server")
    assert not tracing.enabled()
