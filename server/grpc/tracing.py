"""A server span for every ``BroadcastService`` call when tracing is on
(:mod:`tgbroadcast.core.tracing`).

The span continues the caller's trace when its metadata carries one (``traceparent``), is named
``tgbroadcast.v1.BroadcastService/<Method>`` and says ``rpc.grpc.status_code``; it is failed for
the codes that mean the server failed (UNKNOWN, INTERNAL, UNAVAILABLE, ...), not for a refused
request. Health checks and reflection are not traced; nothing of the metadata but the trace
context is read (never the token).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any, Final, TypeAlias

import grpc

import tgbroadcast.core.tracing as tracing
from tgbroadcast.v1 import broadcast_pb2 as pb

_Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
_Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

TRACED_SERVICE: Final = pb.DESCRIPTOR.services_by_name["BroadcastService"].full_name
SERVER_ERRORS: Final = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
"""The codes that fail a span (OpenTelemetry's semantic conventions for gRPC servers)."""


class TracingInterceptor(grpc.aio.ServerInterceptor):
    """Put it first: its span then covers the other interceptors (authentication) too."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler | None:
        handler = await continuation(handler_call_details)
        service, _, method = handler_call_details.method.lstrip("/").rpartition("/")
        if handler is None or service != TRACED_SERVICE or not tracing.enabled():
            return handler
        carrier = {
            key: value
            for key, value in handler_call_details.invocation_metadata or ()
            if key in ("traceparent", "tracestate", "baggage") and isinstance(value, str)
        }
        name = f"{service}/{method}"
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}

        def traced(behaviour: Any) -> Any:
            return _traced(behaviour, name, carrier, attributes)

        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(
                traced(handler.stream_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(
                traced(handler.stream_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(
                traced(handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.unary_unary_rpc_method_handler(
            traced(handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _traced(behaviour: Any, name: str, carrier: dict[str, str], attributes: dict[str, str]) -> Any:
    """The behaviour in the same shape (an async generator, or a coroutine), in a span. An
    abort leaves the span with its code, then goes on to gRPC."""
    if inspect.isasyncgenfunction(behaviour):

        async def stream(request: Any, context: _Context) -> AsyncIterator[Any]:
            aborted: grpc.aio.AbortError | None = None
            with tracing.server_span(name, carrier, attributes):
                try:
                    async with aclosing(behaviour(request, context)) as responses:
                        async for response in responses:
                            yield response
                except grpc.aio.AbortError as exc:
                    aborted = exc
                except Exception:
                    _settled(grpc.StatusCode.UNKNOWN)
                    raise
                _settled(context.code())
            if aborted is not None:
                raise aborted

        return stream

    async def unary(request: Any, context: _Context) -> Any:
        aborted: grpc.aio.AbortError | None = None
        with tracing.server_span(name, carrier, attributes):
            try:
                result = await behaviour(request, context)
            except grpc.aio.AbortError as exc:
                aborted = exc
            except Exception:
                _settled(grpc.StatusCode.UNKNOWN)
                raise
            _settled(context.code())
        if aborted is not None:
            raise aborted
        return result

    return unary


def _settled(code: object) -> None:
    """Record the call's code on its span (no code set: OK)."""
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.OK
    tracing.set_attributes({"rpc.grpc.status_code": code.value[0]})
    if code in SERVER_ERRORS:
        tracing.fail(code.name)
