"""The gRPC transport: a thin servicer over the core's ``BroadcastingService``
(:class:`tgbroadcast.core.service.broadcasting.BroadcastingService`).

Every request acts for a bot: its ``bot`` field, resolved by
:func:`tgbroadcast.server.auth.bot_for` (empty: the token's only bot, else ``default``); a
broadcast is found among the bots the token may see (:func:`tgbroadcast.server.auth.visible_bots`).

Errors are translated here once: ``InvalidArgument`` → INVALID_ARGUMENT with a
``google.rpc.BadRequest`` detail listing every field violation, ``NotFound`` → NOT_FOUND,
``PermissionDenied`` (a bot the token may not use) → PERMISSION_DENIED,
``FailedPrecondition`` → FAILED_PRECONDITION with a ``google.rpc.PreconditionFailure``
naming the current state, ``AlreadyExists`` → ALREADY_EXISTS, ``ResourceExhausted`` →
RESOURCE_EXHAUSTED (with ``google.rpc.RetryInfo`` when waiting helps), a missing or wrong token
→ UNAUTHENTICATED (see :mod:`.interceptors`), a database or queue outage → UNAVAILABLE, anything
else → INTERNAL with a generic message (the cause is logged, never sent).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from tgbroadcast.core.bots.service import BotService
from tgbroadcast.core.domain.access import DEFAULT_BOT
from tgbroadcast.core.domain.errors import (
    BACKEND_UNAVAILABLE,
    AlreadyExists,
    ApiError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from tgbroadcast.core.service.broadcasting import BroadcastingService
from tgbroadcast.core.service.user_import import ImportChunk
from tgbroadcast.server.auth import (
    PermissionDenied,
    TokenCheck,
    bot_for,
    current_caller_name,
    visible_bots,
)
from tgbroadcast.server.grpc import bots as bot_calls
from tgbroadcast.server.grpc import content, controls, messages, reports, watch
from tgbroadcast.server.grpc.interceptors import AuthInterceptor, CallObserver, resource_exhausted
from tgbroadcast.server.grpc.tracing import TracingInterceptor
from tgbroadcast.server.guards import Guards
from tgbroadcast.server.streams import DEFAULT_MAX_WATCHERS, Watchers
from tgbroadcast.server.token_view import describe as describe_caller_token
from tgbroadcast.v1 import broadcast_pb2 as pb
from tgbroadcast.v1 import broadcast_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class BroadcastServicer(pb_grpc.BroadcastServiceServicer):
    def __init__(
        self,
        core: BroadcastingService,
        watchers: Watchers | None = None,
        bots: BotService | None = None,
    ) -> None:
        self._core = core
        self._watchers = Watchers(DEFAULT_MAX_WATCHERS) if watchers is None else watchers
        self._bots = bots

    async def SendMessage(  # noqa: N802 - gRPC method name
        self, request: pb.SendMessageRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.SendMessageResponse:
        async with _translated(context):
            accepted = await self._core.send_message(
                messages.send_request(request),
                created_by=current_caller_name(),
                bot=bot_for(request.bot),
            )
        broadcast = accepted.broadcast
        return pb.SendMessageResponse(
            broadcast_id=broadcast.id,
            status=messages.status(broadcast.status),
            total=broadcast.total,
            replayed=accepted.replayed,
        )

    async def ListBroadcasts(  # noqa: N802
        self, request: pb.ListBroadcastsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListBroadcastsResponse:
        async with _translated(context):
            page = await self._core.list_broadcasts(
                statuses=controls.status_names(request.statuses),
                page_size=request.page_size,
                page_token=request.page_token,
                bot=bot_for(request.bot) if request.bot else "",
                visible=visible_bots(),
            )
        return pb.ListBroadcastsResponse(
            broadcasts=[messages.broadcast(b, {}) for b in page.broadcasts],
            next_page_token=page.next_page_token,
        )

    async def CancelBroadcast(  # noqa: N802
        self, request: pb.CancelBroadcastRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CancelBroadcastResponse:
        async with _translated(context):
            broadcast = await self._core.cancel_broadcast(
                _broadcast_id(request.broadcast_id),
                actor=current_caller_name(),
                visible=visible_bots(),
            )
        return pb.CancelBroadcastResponse(broadcast=messages.broadcast(broadcast, {}))

    async def PauseBroadcast(  # noqa: N802
        self, request: pb.PauseBroadcastRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.PauseBroadcastResponse:
        async with _translated(context):
            broadcast = await self._core.pause_broadcast(
                _broadcast_id(request.broadcast_id),
                actor=current_caller_name(),
                visible=visible_bots(),
            )
        return pb.PauseBroadcastResponse(broadcast=messages.broadcast(broadcast, {}))

    async def ResumeBroadcast(  # noqa: N802
        self, request: pb.ResumeBroadcastRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ResumeBroadcastResponse:
        async with _translated(context):
            broadcast = await self._core.resume_broadcast(
                _broadcast_id(request.broadcast_id),
                actor=current_caller_name(),
                visible=visible_bots(),
            )
        return pb.ResumeBroadcastResponse(broadcast=messages.broadcast(broadcast, {}))

    async def RecallBroadcast(  # noqa: N802
        self, request: pb.RecallBroadcastRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RecallBroadcastResponse:
        async with _translated(context):
            broadcast = await self._core.recall_broadcast(
                _broadcast_id(request.broadcast_id),
                actor=current_caller_name(),
                visible=visible_bots(),
            )
        return pb.RecallBroadcastResponse(broadcast=messages.broadcast(broadcast, {}))

    async def EditBroadcast(  # noqa: N802
        self, request: pb.EditBroadcastRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.EditBroadcastResponse:
        async with _translated(context):
            broadcast = await self._core.edit_broadcast(
                _broadcast_id(request.broadcast_id),
                content.edit_request(request),
                actor=current_caller_name(),
                visible=visible_bots(),
            )
        return pb.EditBroadcastResponse(broadcast=messages.broadcast(broadcast, {}))

    async def GetBroadcast(  # noqa: N802
        self, request: pb.GetBroadcastRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetBroadcastResponse:
        async with _translated(context):
            report = await self._core.get_broadcast(
                _broadcast_id(request.broadcast_id), visible=visible_bots()
            )
        return pb.GetBroadcastResponse(
            broadcast=messages.broadcast(
                report.broadcast,
                report.outcome_counts,
                report.recall_counts,
                report.edit_counts,
                report.variant_counts,
                report.clicks,
                report.links,
            )
        )

    async def ListDeliveries(  # noqa: N802
        self, request: pb.ListDeliveriesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListDeliveriesResponse:
        async with _translated(context):
            page = await self._core.list_deliveries(
                _broadcast_id(request.broadcast_id),
                outcomes=reports.outcome_names(request.outcomes),
                page_size=request.page_size,
                page_token=request.page_token,
                visible=visible_bots(),
            )
        return reports.list_deliveries_response(page)

    async def WatchBroadcast(  # noqa: N802
        self, request: pb.WatchBroadcastRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.WatchBroadcastResponse]:
        async with _translated(context):
            async for message in watch.watch_broadcast(
                self._core,
                self._watchers,
                _broadcast_id(request.broadcast_id),
                context,
                visible=visible_bots(),
                after=request.after,
                from_now=request.from_now,
                max_batch=request.max_batch,
            ):
                yield message

    async def WatchBroadcasts(  # noqa: N802
        self, request: pb.WatchBroadcastsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.WatchBroadcastsResponse]:
        async with _translated(context):
            async for message in watch.watch_broadcasts(
                self._core,
                self._watchers,
                context,
                visible=visible_bots(),
                bot=bot_for(request.bot) if request.bot else "",
                statuses=controls.status_names(request.statuses),
            ):
                yield message

    async def GetToken(  # noqa: N802
        self, request: pb.GetTokenRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetTokenResponse:
        async with _translated(context):
            view = await describe_caller_token(self._bots)
        return pb.GetTokenResponse(
            name=view.name,
            scopes=view.scopes,
            bots=view.bots,
            bot_limits=[
                pb.BotLimit(
                    name=limit.name,
                    rate_limit=limit.rate_limit,
                    paid_rate_limit=limit.paid_rate_limit,
                )
                for limit in view.bot_limits
            ],
        )

    async def PreviewMessage(  # noqa: N802
        self, request: pb.PreviewMessageRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.PreviewMessageResponse:
        async with _translated(context):
            given = request.HasField("message")
            rendered = await self._core.preview_message(
                messages.send_request(request.message) if given else None,
                _user_id(request.user_id),
                bot=bot_for(request.message.bot) if given else DEFAULT_BOT,
                broadcast_id=request.broadcast_id,
                variant=request.variant,
                visible=visible_bots(),
            )
        return content.preview(rendered)

    async def UpsertUsers(  # noqa: N802
        self, request: pb.UpsertUsersRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.UpsertUsersResponse:
        async with _translated(context):
            count = await self._core.upsert_users(
                [messages.user_profile(u) for u in request.users], bot=bot_for(request.bot)
            )
        return pb.UpsertUsersResponse(upserted=count)

    async def ListUsers(  # noqa: N802
        self, request: pb.ListUsersRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListUsersResponse:
        async with _translated(context):
            page = await self._core.list_users(
                page_size=request.page_size,
                page_token=request.page_token,
                user_filter=messages.user_filter(request.filter),
                active_only=request.active_only,
                bot=bot_for(request.bot),
            )
        return pb.ListUsersResponse(
            users=[messages.user(u) for u in page.users], next_page_token=page.next_page_token
        )

    async def GetUser(  # noqa: N802
        self, request: pb.GetUserRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetUserResponse:
        async with _translated(context):
            found = await self._core.get_user(_user_id(request.user_id), bot=bot_for(request.bot))
        return pb.GetUserResponse(user=messages.user(found))

    async def DeleteUser(  # noqa: N802
        self, request: pb.DeleteUserRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DeleteUserResponse:
        async with _translated(context):
            await self._core.delete_user(_user_id(request.user_id), bot=bot_for(request.bot))
        return pb.DeleteUserResponse()

    async def ImportUsers(  # noqa: N802
        self,
        request_iterator: AsyncIterator[pb.ImportUsersRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.ImportUsersResponse:
        """Each message is one chunk, committed before the next is read; a bad chunk ends
        the call with INVALID_ARGUMENT naming ``chunks[k]`` (earlier chunks stay). The bot is
        the first chunk's; a later chunk naming another one is a bad chunk."""
        async with _translated(context):
            first = await anext(aiter(request_iterator), None)
            bot = bot_for("" if first is None else first.bot)

            async def chunks() -> AsyncIterator[ImportChunk]:
                if first is None:
                    return
                yield ImportChunk([messages.user_profile(u) for u in first.users])
                index = 1
                async for message in request_iterator:
                    if message.bot and message.bot != bot:
                        raise InvalidArgument.single(
                            f"chunks[{index}].bot", f"must be empty or the first chunk's {bot!r}"
                        )
                    yield ImportChunk([messages.user_profile(u) for u in message.users])
                    index += 1

            imported = await self._core.import_users(chunks(), bot=bot)
        return pb.ImportUsersResponse(imported=imported)

    async def CreateBot(  # noqa: N802
        self, request: pb.CreateBotRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CreateBotResponse:
        async with _translated(context):
            return await bot_calls.create(self._bots, request, context)

    async def ListBots(  # noqa: N802
        self, request: pb.ListBotsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListBotsResponse:
        async with _translated(context):
            return await bot_calls.listed(self._bots)

    async def GetBot(  # noqa: N802
        self, request: pb.GetBotRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetBotResponse:
        async with _translated(context):
            return await bot_calls.get(self._bots, request)

    async def DeleteBot(  # noqa: N802
        self, request: pb.DeleteBotRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DeleteBotResponse:
        async with _translated(context):
            await bot_calls.delete(self._bots, request)
        return pb.DeleteBotResponse()


@asynccontextmanager
async def _translated(context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[None]:
    """Turns the core's exceptions into gRPC statuses."""
    try:
        yield
    except grpc.aio.AbortError:
        raise
    except Exception as exc:
        status = _status_for(exc)
        await context.abort(status.code, status.details, status.trailing_metadata)


def _status_for(exc: Exception) -> grpc.Status:
    if isinstance(exc, InvalidArgument):
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in exc.violations
                ]
            )
        )
        return rpc_status.to_status(
            status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=str(exc), details=[detail])
        )
    if isinstance(exc, NotFound):
        return rpc_status.to_status(status_pb2.Status(code=code_pb2.NOT_FOUND, message=str(exc)))
    if isinstance(exc, PermissionDenied):
        return rpc_status.to_status(
            status_pb2.Status(code=code_pb2.PERMISSION_DENIED, message=str(exc))
        )
    if isinstance(exc, FailedPrecondition):
        return _precondition_failed(exc)
    if isinstance(exc, AlreadyExists):
        return rpc_status.to_status(
            status_pb2.Status(code=code_pb2.ALREADY_EXISTS, message=str(exc))
        )
    if isinstance(exc, ResourceExhausted):
        return resource_exhausted(str(exc), exc.retry_after)
    if isinstance(exc, ApiError):
        return rpc_status.to_status(
            status_pb2.Status(code=code_pb2.FAILED_PRECONDITION, message=str(exc))
        )
    if isinstance(exc, BACKEND_UNAVAILABLE):
        logger.warning("backend unavailable", extra={"error": type(exc).__name__})
        return rpc_status.to_status(
            status_pb2.Status(
                code=code_pb2.UNAVAILABLE, message="a backend is unavailable; try again"
            )
        )
    logger.exception("internal error", exc_info=exc)
    return rpc_status.to_status(status_pb2.Status(code=code_pb2.INTERNAL, message="internal error"))


def _broadcast_id(value: int) -> int:
    """A request's ``broadcast_id``, which must name one: positive (as REST's path)."""
    if value <= 0:
        raise InvalidArgument.single("broadcast_id", "must be a positive 64-bit number")
    return value


def _user_id(value: int) -> int:
    """A request's ``user_id`` (a Telegram chat id): given, not 0 (as REST's path)."""
    if value == 0:
        raise InvalidArgument.single("user_id", "must be a non-zero 64-bit number")
    return value


def _precondition_failed(exc: FailedPrecondition) -> grpc.Status:
    """FAILED_PRECONDITION with a ``google.rpc.PreconditionFailure`` detail: one violation of
    type ``STATE`` whose subject is what has the state (``broadcast``, ``bot``) and whose
    description is that state (``completed``)."""
    detail = any_pb2.Any()
    detail.Pack(
        error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(
                    type="STATE", subject=exc.subject, description=exc.state
                )
            ]
        )
    )
    return rpc_status.to_status(
        status_pb2.Status(code=code_pb2.FAILED_PRECONDITION, message=str(exc), details=[detail])
    )


async def create_server(
    core: BroadcastingService,
    tokens: TokenCheck,
    *,
    guards: Guards | None = None,
    health_servicer: health.aio.HealthServicer | None = None,
    watchers: Watchers | None = None,
    observer: CallObserver | None = None,
    bot_service: BotService | None = None,
) -> grpc.aio.Server:
    """The API server, not yet bound or started.

    Besides ``BroadcastService`` it serves ``grpc.health.v1.Health`` (SERVING for the whole
    server, ``""``, and for ``tgbroadcast.v1.BroadcastService``; NOT_FOUND for other names) and
    server reflection (``grpc.reflection.v1alpha``), both without the API token; ``guards``:
    the allow-list, rate limit and failed-authentication throttle (see :mod:`.interceptors`),
    none when omitted. ``health_servicer``: one that follows readiness
    (:class:`.health.HealthFollower`) instead of SERVING for good; ``watchers``: the bound on
    open ``WatchBroadcast`` streams shared with the REST event streams (see
    :mod:`tgbroadcast.server.streams`); ``observer``: told of every call as it ends (metrics);
    ``bot_service``: what the bots RPCs manage (FAILED_PRECONDITION without it).
    """
    server = grpc.aio.server(
        interceptors=[TracingInterceptor(), AuthInterceptor(tokens, guards, observer)],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # gRPC binds with SO_REUSEPORT by default: a second server on the port would share
            # it silently (half the calls to each); a port in use must fail the start instead.
            ("grpc.so_reuseport", 0),
        ],
    )
    pb_grpc.add_BroadcastServiceServicer_to_server(
        BroadcastServicer(core, watchers, bot_service), server
    )
    broadcast_service = pb.DESCRIPTOR.services_by_name["BroadcastService"].full_name
    if health_servicer is None:
        health_servicer = health.aio.HealthServicer()
        for name in (health.OVERALL_HEALTH, broadcast_service):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (broadcast_service, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    return server
