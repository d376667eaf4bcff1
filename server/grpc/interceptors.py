"""The gRPC side of :mod:`tgbroadcast.server.guards`: who may call, how often, and the access log.

Every call goes through :meth:`~tgbroadcast.server.guards.Guards.admit` in
:class:`AuthInterceptor`: the network allow-list (PERMISSION_DENIED), the failed-authentication
throttle (RESOURCE_EXHAUSTED), the token (UNAUTHENTICATED), the token's request rate
(RESOURCE_EXHAUSTED); both RESOURCE_EXHAUSTED carry a ``google.rpc.RetryInfo`` detail saying
how long to wait. Then the method's scope (:mod:`tgbroadcast.server.scopes`):
PERMISSION_DENIED naming it (nothing of a request stream is read first). An authenticated
call runs with its :class:`~tgbroadcast.server.auth.Caller` in
:data:`~tgbroadcast.server.auth.CALLER`; the bot a call names and the broadcasts it may see
are checked by the servicer and the service.

``grpc.health.v1.Health`` and server reflection need no token (one is the readiness probe,
the other reveals the public contract only, like ``/openapi.json``) but follow the
allow-list like every RPC: only the HTTP probes ``/livez`` and ``/readyz`` answer anyone. A
method the server does not have is refused PERMISSION_DENIED outside the allow-list, and
UNIMPLEMENTED inside it, so a scan learns nothing from outside.

One line per call on the ``tgbroadcast.access`` logger: method, status code, duration, token
name, client address. Never metadata or a token. The same three facts go to an optional
:class:`CallObserver` (the metrics), the method by its short name (``SendMessage``) or
``unknown`` for a method the server does not have.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import aclosing, contextmanager
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeAlias

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from tgbroadcast.server.auth import CALLER, TokenCheck
from tgbroadcast.server.guards import Guards, Refusal, RefusalKind, grpc_peer_address
from tgbroadcast.server.scopes import GRPC, Rule, judge
from tgbroadcast.v1 import broadcast_pb2 as pb

access_logger = logging.getLogger("tgbroadcast.access")

_Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
_Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
_Admit: TypeAlias = Callable[[_Context, "_Call"], Awaitable[None]]

MAX_LOGGED_METHOD: Final = 100
"""Characters of a method name the server does not have that the access log keeps."""
UNIMPLEMENTED: Final = "Method not found!"
"""gRPC's own words for a method the server does not have."""
UNKNOWN_METHOD: Final = "unknown"
"""The method a :class:`CallObserver` is told for one the server does not have."""
CODES: Final = {
    RefusalKind.FORBIDDEN: grpc.StatusCode.PERMISSION_DENIED,
    RefusalKind.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
}
SCOPED_SERVICE: Final = pb.DESCRIPTOR.services_by_name["BroadcastService"].full_name
"""The service whose every method needs the scope :data:`tgbroadcast.server.scopes.GRPC` names."""
RULES: Final[Mapping[str, Mapping[str, Rule]]] = {SCOPED_SERVICE: GRPC}
"""Each service's methods' rules: a method that needs a token and is in none (of another
service, which has no scope yet) is refused PERMISSION_DENIED, never served."""


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


class CallObserver(Protocol):
    """Told of every call when it ends: the short method name, the status code's name
    (``OK``, ``INVALID_ARGUMENT``) and the seconds it took."""

    def __call__(self, *, method: str, code: str, seconds: float) -> None: ...


@dataclass(slots=True)
class _Call:
    """What the access log says about one call, filled in as the call goes."""

    method: str
    started: float
    client: str = ""
    token_name: str = ""
    code: grpc.StatusCode | None = None
    known: bool = True
    observer: CallObserver | None = None


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """The allow-list, the failed-authentication throttle, the API token, the per-token rate
    and the access log, for every call (see the module's docstring)."""

    PUBLIC_SERVICES = frozenset({health.SERVICE_NAME, reflection.SERVICE_NAME})
    """Served without a token (behind the allow-list)."""

    def __init__(
        self,
        tokens: TokenCheck,
        guards: Guards | None = None,
        observer: CallObserver | None = None,
        *,
        rules: Mapping[str, Mapping[str, Rule]] | None = RULES,
    ) -> None:
        """``rules``: :data:`RULES`; None (a test's) checks no scope."""
        self._tokens = tokens
        self._guards = Guards() if guards is None else guards
        self._observer = observer
        self._rules = rules

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler | None:
        method = handler_call_details.method
        handler = await continuation(handler_call_details)
        if handler is None:
            return _unimplemented(method[:MAX_LOGGED_METHOD], self._admit_public)
        # The method is "/<package>.<Service>/<Method>".
        service = method.lstrip("/").rpartition("/")[0]
        if service in self.PUBLIC_SERVICES:
            return _wrapped(handler, method, self._admit_public)
        return _wrapped(handler, method, self._admit)

    async def _admit_public(self, context: _Context, call: _Call) -> None:
        """The allow-list only."""
        await self._check(context, call, public=True)

    async def _admit(self, context: _Context, call: _Call) -> None:
        """Every guard; sets :data:`CALLER` when the call may go ahead."""
        await self._check(context, call, public=False)

    async def _check(self, context: _Context, call: _Call, *, public: bool) -> None:
        call.observer = self._observer
        call.client = self._client(context)
        verdict = self._guards.admit(
            self._tokens, call.client, _metadata(context, "authorization"), public=public
        )
        if isinstance(verdict, Refusal):
            if verdict.caller is not None:
                call.token_name = verdict.caller.token_name
            await _refuse(context, call, verdict)
        elif verdict is not None:
            call.token_name = verdict.token_name
            if self._rules is not None:
                service, _, short = call.method.lstrip("/").rpartition("/")
                denied = judge(verdict, self._rules.get(service, {}).get(short))
                if denied is not None:
                    call.code = grpc.StatusCode.PERMISSION_DENIED
                    await context.abort(call.code, denied.detail)
            CALLER.set(verdict)

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


async def _refuse(context: _Context, call: _Call, refusal: Refusal) -> None:
    """Abort with the refusal's code: PERMISSION_DENIED, UNAUTHENTICATED, or
    RESOURCE_EXHAUSTED with ``RetryInfo``."""
    if refusal.kind is RefusalKind.TOO_MANY:
        status = resource_exhausted(refusal.detail, refusal.retry_after)
        call.code = status.code
        await context.abort(status.code, status.details, status.trailing_metadata)
    call.code = CODES[refusal.kind]
    await context.abort(call.code, refusal.detail)


def _unimplemented(method: str, admit: _Admit) -> _Handler:
    """A method the server does not have: the allow-list first (gRPC itself would answer
    UNIMPLEMENTED to anyone), then UNIMPLEMENTED, logged like any call. Bidirectional
    streaming takes any call's shape, and the request is never read."""

    async def refuse(requests: Any, context: _Context) -> None:
        with _logged(method, context) as call:
            call.known = False
            await admit(context, call)
            call.code = grpc.StatusCode.UNIMPLEMENTED
            await context.abort(call.code, UNIMPLEMENTED)

    return grpc.stream_stream_rpc_method_handler(refuse)


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
    seconds = time.monotonic() - call.started
    access_logger.info(
        "rpc",
        extra={
            "transport": "grpc",
            "method": call.method,
            "status": code.name,
            "duration_ms": round(seconds * 1000, 1),
            "token_name": call.token_name,
            "client": call.client,
        },
    )
    if call.observer is not None:
        method = call.method.rpartition("/")[2] if call.known else UNKNOWN_METHOD
        call.observer(method=method, code=code.name, seconds=seconds)
