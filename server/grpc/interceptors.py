"""The gRPC side of :mod:`tgbroadcast.server.guards`: who may call, how often, and the access log.

Every call goes through :class:`AuthInterceptor`, in this order: the network allow-list
(PERMISSION_DENIED), the failed-authentication throttle (RESOURCE_EXHAUSTED), the token
(UNAUTHENTICATED), the token's request rate (RESOURCE_EXHAUSTED); both RESOURCE_EXHAUSTED
carry a ``google.rpc.RetryInfo`` detail saying how long to wait. An authenticated call runs
with its :class:`~tgbroadcast.server.auth.Caller` in :data:`~tgbroadcast.server.auth.CALLER`.

``grpc.health.v1.Health`` is exempt from all of it: it is the readiness probe, and probes
come from wherever the orchestrator runs. Server reflection follows the allow-list but needs
no token (like ``/openapi.json``, it reveals the public contract only).

One line per call on the ``tgbroadcast.access`` logger: method, status code, duration, token
name, client address. Never metadata or a token.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing, contextmanager
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from tgbroadcast.server.auth import CALLER, Caller, TokenCheck
from tgbroadcast.server.guards import Guards, grpc_peer_address

access_logger = logging.getLogger("tgbroadcast.access")

_Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
_Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
_Admit: TypeAlias = Callable[[_Context, "_Call"], Awaitable[None]]

_UNAUTHENTICATED = "missing or invalid API token (metadata authorization: Bearer <token>)"


def resource_exhausted(message: str, retry_after: float | None = None) -> grpc.Status:
    """RESOURCE_EXHAUSTED, with a ``google.rpc.RetryInfo`` detail when waiting helps."""
    details = []
    if retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(math.ceil(retry_after * 1000) * 1_000_000)  # whole milliseconds
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        details.append(detail)
    return rpc_status.to_status(
        status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=message, details=details)
    )


@dataclass(slots=True)
class _Call:
    """What the access log says about one call, filled in as the call goes."""

    method: str
    started: float
    client: str = ""
    token_name: str = ""
    code: grpc.StatusCode | None = None


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """The allow-list, the failed-authentication throttle, the API token, the per-token rate
    and the access log, for every call (see the module's docstring for the exemptions)."""

    EXEMPT_SERVICES = frozenset({health.SERVICE_NAME})
    """Served to anyone, anywhere: the readiness probe."""
    PUBLIC_SERVICES = frozenset({health.SERVICE_NAME, reflection.SERVICE_NAME})
    """Served without a token."""

    def __init__(self, tokens: TokenCheck, guards: Guards | None = None) -> None:
        self._tokens = tokens
        self._guards = Guards() if guards is None else guards

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        # The method is "/<package>.<Service>/<Method>".
        service = method.lstrip("/").rpartition("/")[0]
        if service in self.EXEMPT_SERVICES:
            return _wrapped(handler, method, self._admit_anyone)
        if service in self.PUBLIC_SERVICES:
            return _wrapped(handler, method, self._admit_public)
        return _wrapped(handler, method, self._admit)

    async def _admit_anyone(self, context: _Context, call: _Call) -> None:
        """Nothing to check: the client's address for the access log."""
        call.client = self._client(context)

    async def _admit_public(self, context: _Context, call: _Call) -> None:
        """The allow-list only."""
        call.client = self._client(context)
        if not self._guards.network.allows(call.client):
            await _refuse(
                context,
                call,
                grpc.StatusCode.PERMISSION_DENIED,
                f"client address {call.client[:100]} is not in server.allowed_networks",
            )

    async def _admit(self, context: _Context, call: _Call) -> None:
        """Every guard; sets :data:`CALLER` when the call may go ahead."""
        await self._admit_public(context, call)
        guards = self._guards
        if wait := guards.auth_failures.blocked(call.client):
            message = "too many failed authentications from this address; try later"
            await _exhausted(context, call, message, wait)
        name = self._tokens.identify(_metadata(context, "authorization"))
        if name is None:
            guards.auth_failures.failed(call.client)
            await _refuse(context, call, grpc.StatusCode.UNAUTHENTICATED, _UNAUTHENTICATED)
            return
        call.token_name = name
        if wait := guards.limiter.acquire(name):
            message = (
                f"more than server.requests_per_second ({guards.limiter.rate:g}) with this "
                "API token; slow down"
            )
            await _exhausted(context, call, message, wait)
        CALLER.set(Caller(token_name=name, address=call.client))

    def _client(self, context: _Context) -> str:
        forwarded = [
            value
            for key, value in context.invocation_metadata() or ()
            if key == "x-forwarded-for" and isinstance(value, str)
        ]
        return self._guards.network.client_address(grpc_peer_address(context.peer()), forwarded)


def _metadata(context: _Context, key: str) -> str | None:
    for name, value in context.invocation_metadata() or ():
        if name == key and isinstance(value, str):
            return value
    return None


async def _refuse(context: _Context, call: _Call, code: grpc.StatusCode, message: str) -> None:
    call.code = code
    await context.abort(code, message)


async def _exhausted(context: _Context, call: _Call, message: str, wait: float) -> None:
    status = resource_exhausted(message, wait)
    call.code = status.code
    await context.abort(status.code, status.details, status.trailing_metadata)


def _wrapped(handler: _Handler, method: str, admit: _Admit) -> _Handler:
    """``handler`` whose behaviour is admitted first (nothing of a request stream is read
    before), then run with :data:`CALLER` set, and logged once it ends."""
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(
            _guarded(handler.stream_stream, method, admit),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(
            _guarded(handler.stream_unary, method, admit),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(
            _guarded(handler.unary_stream, method, admit),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return grpc.unary_unary_rpc_method_handler(
        _guarded(handler.unary_unary, method, admit),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _guarded(behaviour: Any, method: str, admit: _Admit) -> Any:
    """The behaviour in the same shape (an async generator, or a coroutine that may write
    to the context), admitted and logged."""
    if inspect.isasyncgenfunction(behaviour):

        async def stream(request: Any, context: _Context) -> AsyncIterator[Any]:
            with _logged(method, context) as call:
                await admit(context, call)
                async with aclosing(behaviour(request, context)) as responses:
                    async for response in responses:
                        yield response

        return stream

    async def unary(request: Any, context: _Context) -> Any:
        with _logged(method, context) as call:
            await admit(context, call)
            return await behaviour(request, context)

    return unary


@contextmanager
def _logged(method: str, context: _Context) -> Iterator[_Call]:
    """One access-log line when the call ends, however it ends."""
    call = _Call(method=method, started=time.monotonic())
    try:
        yield call
    except (asyncio.CancelledError, GeneratorExit):
        call.code = grpc.StatusCode.CANCELLED
        raise
    except grpc.aio.AbortError:
        call.code = call.code or _code(context) or grpc.StatusCode.UNKNOWN
        raise
    except Exception:
        call.code = grpc.StatusCode.UNKNOWN
        raise
    else:
        call.code = _code(context) or grpc.StatusCode.OK
    finally:
        _log(call)


def _code(context: _Context) -> grpc.StatusCode | None:
    code = context.code()
    return code if isinstance(code, grpc.StatusCode) else None


def _log(call: _Call) -> None:
    code = call.code or grpc.StatusCode.UNKNOWN
    access_logger.info(
        "rpc",
        extra={
            "transport": "grpc",
            "method": call.method,
            "status": code.name,
            "duration_ms": round((time.monotonic() - call.started) * 1000, 1),
            "token_name": call.token_name,
            "client": call.client,
        },
    )
