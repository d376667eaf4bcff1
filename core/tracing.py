"""OpenTelemetry tracing, optional: ``pip install tgbroadcast[otel]`` and the standard
``OTEL_*`` environment.

One trace follows a broadcast: the API call (gRPC or HTTP), the store's write, the
dispatcher's publishing, the jobs across NATS (the W3C ``traceparent`` in each message's
headers), each worker's handling of a job and its Telegram calls. Spans carry
``tgbroadcast.*`` attributes (the broadcast id, counts), never a token, a URL with one, a
message's text or a recipient's id; a failed span says only the exception's type.

Guarantees:

* Without the ``opentelemetry`` packages, or until :func:`use` is given a provider, every
  function here does nothing and costs a check of one module variable: no span, no header.
* :func:`setup` (entry points only) builds the SDK's provider from the environment, once
  it says where spans go — ``OTEL_TRACES_EXPORTER``, ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (otherwise tracing stays off: a process with
  the extra installed and no collector does not retry exports to ``localhost`` forever):
  ``OTEL_SDK_DISABLED=true`` turns tracing off; ``OTEL_TRACES_EXPORTER`` (default ``otlp``,
  over HTTP/protobuf unless ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`` says ``grpc``; ``none``,
  ``console``, or any installed exporter's name); ``OTEL_SERVICE_NAME`` /
  ``OTEL_RESOURCE_ATTRIBUTES`` (the service name defaults to the process's role);
  ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*`` and ``OTEL_EXPORTER_OTLP_*`` as the SDK reads them.
  Spans are exported in the background (a batch processor); shutting down flushes them.
* Context travels as ``OTEL_PROPAGATORS`` says (W3C trace context and baggage by default).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
from collections.abc import Coroutine, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypeVar

from tgbroadcast.core.domain.errors import ConfigError

with suppress(ImportError):  # without the [otel] extra, nothing below that uses them runs
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace

if TYPE_CHECKING:
    from opentelemetry.context import Context as Context  # re-exported, for annotations
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.trace import Tracer, TracerProvider
    from opentelemetry.util.types import AttributeValue

logger = logging.getLogger(__name__)

T = TypeVar("T")
Kind: TypeAlias = Literal["internal", "server", "client", "consumer", "producer"]
"""A span's kind, as OpenTelemetry names them."""

BROADCAST_ID = "tgbroadcast.broadcast_id"
"""The span attribute naming the broadcast a span works for."""

_tracer: Tracer | None = None
_NOTHING: AbstractContextManager[None] = nullcontext()


def use(provider: TracerProvider | None) -> None:
    """Record spans with ``provider`` from now on (``None``: record nothing again)."""
    global _tracer
    _tracer = None if provider is None else provider.get_tracer("tgbroadcast")


def enabled() -> bool:
    """Whether spans are recorded (:func:`use` was given a provider)."""
    return _tracer is not None


def span(
    name: str,
    attributes: Mapping[str, AttributeValue] | None = None,
    *,
    parent: Context | None = None,
    kind: Kind = "internal",
) -> AbstractContextManager[None]:
    """A span around the ``with`` block, current inside it; a child of ``parent`` when given,
    else of the current span. An exception leaving the block marks it failed (its type)."""
    if _tracer is None:
        return _NOTHING
    return _span(_tracer, name, attributes, parent, kind)


@contextmanager
def _span(
    tracer: Tracer,
    name: str,
    attributes: Mapping[str, AttributeValue] | None,
    parent: Context | None,
    kind: Kind,
) -> Iterator[None]:
    with tracer.start_as_current_span(
        name,
        context=parent,
        kind=trace.SpanKind[kind.upper()],
        attributes=attributes,
        record_exception=False,  # its message may hold anything: only the type is kept
        set_status_on_exception=False,
    ):
        try:
            yield
        except Exception as exc:
            fail(type(exc).__name__)
            raise


def traced(
    coro: Coroutine[Any, Any, T],
    name: str,
    attributes: Mapping[str, AttributeValue] | None = None,
    *,
    parent: Context | None = None,
    kind: Kind = "internal",
) -> Coroutine[Any, Any, T]:
    """``coro`` running inside a span (itself, untouched, when tracing is off)."""
    if _tracer is None:
        return coro
    return _traced(coro, _span(_tracer, name, attributes, parent, kind))


async def _traced(coro: Coroutine[Any, Any, T], around: AbstractContextManager[None]) -> T:
    with around:
        return await coro


def create_task(
    coro: Coroutine[Any, Any, T],
    *,
    name: str,
    span_name: str,
    attributes: Mapping[str, AttributeValue] | None = None,
    parent: Context | None = None,
    kind: Kind = "internal",
) -> asyncio.Task[T]:
    """``asyncio.create_task(coro, name=name)``, the task running inside a span that ends
    with it: failed (the exception's type) if the task raised, which still reaches whoever
    awaits the task but is then no longer logged as "never retrieved"."""
    if _tracer is None:
        return asyncio.create_task(coro, name=name)
    current = _tracer.start_span(
        span_name, context=parent, kind=trace.SpanKind[kind.upper()], attributes=attributes
    )
    context = contextvars.copy_context()
    context.run(otel_context.attach, trace.set_span_in_context(current, parent))

    def end(task: asyncio.Task[T]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            current.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
        current.end()

    task = asyncio.create_task(coro, name=name, context=context)
    task.add_done_callback(end)
    return task


def server_span(
    name: str, carrier: Mapping[str, str], attributes: Mapping[str, AttributeValue]
) -> AbstractContextManager[None]:
    """The span of an API call, continuing a caller's trace when ``carrier`` (its headers or
    metadata) holds one."""
    if _tracer is None:
        return _NOTHING
    return _span(_tracer, name, attributes, extract(carrier), "server")


def set_attributes(attributes: Mapping[str, AttributeValue]) -> None:
    """Add ``attributes`` to the current span."""
    if _tracer is not None:
        trace.get_current_span().set_attributes(attributes)


def fail(description: str) -> None:
    """Mark the current span failed; ``description`` must hold no secret or personal data."""
    if _tracer is not None:
        trace.get_current_span().set_status(trace.Status(trace.StatusCode.ERROR, description))


def capture() -> Context | None:
    """The current context if a span is recording, to continue the trace later (elsewhere
    in the process, as :func:`span`'s ``parent``); ``None`` otherwise."""
    if _tracer is None or not trace.get_current_span().is_recording():
        return None
    return otel_context.get_current()


def headers() -> dict[str, str]:
    """The current trace context as message headers (``traceparent``); empty when off."""
    carrier: dict[str, str] = {}
    if _tracer is not None:
        propagate.inject(carrier)
    return carrier


def extract(carrier: Mapping[str, str] | None) -> Context | None:
    """The context :func:`headers` put into ``carrier``; ``None`` when off or absent."""
    if _tracer is None or not carrier:
        return None
    return propagate.extract(carrier)


def setup(default_service_name: str) -> SdkTracerProvider | None:
    """Start tracing as the ``OTEL_*`` environment says (see the module's docstring); the
    provider's ``shutdown()`` flushes and stops it. ``None``, and nothing set up, when the
    SDK is not installed or ``OTEL_SDK_DISABLED`` is true. ``ConfigError`` for an exporter
    that is not installed."""
    try:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider as SdkProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
    except ImportError:
        return None
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if not any(os.environ.get(name, "").strip() for name in _DESTINATIONS):
        logger.debug("tracing off: no OTEL_TRACES_EXPORTER or OTEL_EXPORTER_OTLP_*ENDPOINT")
        return None
    exporters = [_exporter(name) for name in _exporter_names()]
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: default_service_name}))
    provider = SdkProvider(resource=resource)
    for exporter in exporters:
        assert issubclass(exporter, SpanExporter)
        provider.add_span_processor(BatchSpanProcessor(exporter()))
    trace.set_tracer_provider(provider)  # for any instrumentation the operator adds
    use(provider)
    logger.info(
        "tracing on",
        extra={
            "service_name": resource.attributes.get(SERVICE_NAME),
            "exporters": ",".join(e.__name__ for e in exporters) or "none",
        },
    )
    return provider


_DESTINATIONS = (
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
)
"""Tracing starts once one of these says where spans go."""


def _exporter_names() -> list[str]:
    names = os.environ.get("OTEL_TRACES_EXPORTER", "otlp")
    chosen = [name.strip() for name in names.split(",") if name.strip()]
    if chosen in ([], ["none"]):
        return []
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    otlp = "otlp_proto_grpc" if protocol == "grpc" else "otlp_proto_http"
    return [otlp if name == "otlp" else name for name in chosen]


def _exporter(name: str) -> type:
    """The span exporter class an installed package registers under ``name``."""
    for point in entry_points(group="opentelemetry_traces_exporter", name=name):
        exporter: type = point.load()
        return exporter
    raise ConfigError("OTEL_TRACES_EXPORTER", f"no span exporter {name!r} is installed")
