"""``BroadcastClient``: the gRPC API from asyncio, typed, with our errors.

Calls return the generated protobuf messages (``tgbroadcast.v1.broadcast_pb2``): they are
the contract, documented in ``proto/tgbroadcast/v1/broadcast.proto``. Enum arguments take
either the proto value (``pb.MEDIA_TYPE_PHOTO``) or the REST spelling (``"photo"``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable
from datetime import datetime
from types import TracebackType
from typing import Self, TypeAlias, TypedDict, TypeVar, Unpack

import grpc
from google.protobuf.descriptor import EnumDescriptor

from tgbroadcast.v1 import broadcast_pb2 as pb
from tgbroadcast.v1 import broadcast_pb2_grpc as pb_grpc
from tgbroadcast_client._errors import error_from_rpc

Request = TypeVar("Request")
Response = TypeVar("Response")

MediaTypeArg: TypeAlias = "str | pb.MediaType.ValueType"
ParseModeArg: TypeAlias = "str | pb.ParseMode.ValueType"
StatusArg: TypeAlias = "str | pb.BroadcastStatus.ValueType"
OutcomeArg: TypeAlias = "str | pb.DeliveryOutcome.ValueType"


def _prefix(enum: EnumDescriptor) -> str:
    return enum.values_by_number[0].name.removesuffix("UNSPECIFIED")


def _enum_value(enum: str, value: str | int) -> int:
    descriptor = pb.DESCRIPTOR.enum_types_by_name[enum]
    if not isinstance(value, str):
        return value
    if not value:
        return 0
    found = descriptor.values_by_name.get(_prefix(descriptor) + value.upper())
    if found is None or found.number == 0:
        names = ", ".join(enum_names(enum))
        raise ValueError(f"unknown {enum} {value!r}; one of: {names}")
    return found.number


def enum_names(enum: str) -> list[str]:
    """The REST spellings of a proto enum (``"MediaType"`` → ``["text", "photo", ...]``)."""
    descriptor = pb.DESCRIPTOR.enum_types_by_name[enum]
    prefix = _prefix(descriptor)
    return [v.name.removeprefix(prefix).lower() for v in descriptor.values if v.number]


def enum_name(enum: str, value: int) -> str:
    """The REST spelling of a proto enum value: ``enum_name("BroadcastStatus",
    pb.BROADCAST_STATUS_RUNNING)`` is ``"running"``; unknown numbers give their digits."""
    descriptor = pb.DESCRIPTOR.enum_types_by_name[enum]
    found = descriptor.values_by_number.get(value)
    if found is None:
        return str(value)
    return found.name.removeprefix(_prefix(descriptor)).lower()


def media_type_value(value: MediaTypeArg) -> pb.MediaType.ValueType:
    """``"photo"`` or ``pb.MEDIA_TYPE_PHOTO`` → ``pb.MEDIA_TYPE_PHOTO``; ``""`` is text."""
    return pb.MediaType.ValueType(_enum_value("MediaType", value))


def parse_mode_value(value: ParseModeArg) -> pb.ParseMode.ValueType:
    """``"html"``, ``"markdown_v2"`` or the proto value; ``""`` is plain text."""
    return pb.ParseMode.ValueType(_enum_value("ParseMode", value))


def status_value(value: StatusArg) -> pb.BroadcastStatus.ValueType:
    """``"running"`` or ``pb.BROADCAST_STATUS_RUNNING`` → the proto value."""
    return pb.BroadcastStatus.ValueType(_enum_value("BroadcastStatus", value))


def outcome_value(value: OutcomeArg) -> pb.DeliveryOutcome.ValueType:
    """``"blocked"`` or ``pb.DELIVERY_OUTCOME_BLOCKED`` → the proto value."""
    return pb.DeliveryOutcome.ValueType(_enum_value("DeliveryOutcome", value))


class MessageFields(TypedDict, total=False):
    """:func:`message_request`'s keyword arguments (and so :meth:`BroadcastClient.send`'s)."""

    user_ids: Iterable[int]
    all_users: bool
    tags: Iterable[str]
    language_codes: Iterable[str]
    media_type: MediaTypeArg
    media_url: str
    media_data: bytes
    media_filename: str
    parse_mode: ParseModeArg
    entities: Iterable[pb.MessageEntity]
    reply_markup: pb.InlineKeyboardMarkup | None
    link_preview_options: pb.LinkPreviewOptions | None
    album: Iterable[pb.AlbumItem]
    source: pb.MessageRef | None
    disable_notification: bool
    protect_content: bool
    allow_paid_broadcast: bool
    idempotency_key: str
    send_at: datetime | None
    callback_url: str
    personalize: bool


def message_request(
    message: str = "",
    *,
    user_ids: Iterable[int] = (),
    all_users: bool = False,
    tags: Iterable[str] = (),
    language_codes: Iterable[str] = (),
    media_type: MediaTypeArg = "",
    media_url: str = "",
    media_data: bytes = b"",
    media_filename: str = "",
    parse_mode: ParseModeArg = "",
    entities: Iterable[pb.MessageEntity] = (),
    reply_markup: pb.InlineKeyboardMarkup | None = None,
    link_preview_options: pb.LinkPreviewOptions | None = None,
    album: Iterable[pb.AlbumItem] = (),
    source: pb.MessageRef | None = None,
    disable_notification: bool = False,
    protect_content: bool = False,
    allow_paid_broadcast: bool = False,
    idempotency_key: str = "",
    send_at: datetime | None = None,
    callback_url: str = "",
    personalize: bool = False,
) -> pb.SendMessageRequest:
    """A ``SendMessageRequest`` from keyword arguments (what :meth:`BroadcastClient.send`
    sends). The audience is ``user_ids``, ``all_users``, or a filter by ``tags`` and/or
    ``language_codes``; the server refuses a request with none or several."""
    request = pb.SendMessageRequest(
        message=message,
        media_type=media_type_value(media_type),
        media_url=media_url,
        media_data=media_data,
        media_filename=media_filename,
        user_ids=list(user_ids),
        all_users=all_users,
        parse_mode=parse_mode_value(parse_mode),
        entities=list(entities),
        album=list(album),
        disable_notification=disable_notification,
        protect_content=protect_content,
        allow_paid_broadcast=allow_paid_broadcast,
        idempotency_key=idempotency_key,
        callback_url=callback_url,
        personalize=personalize,
    )
    tags, language_codes = list(tags), list(language_codes)
    if tags or language_codes:
        request.filter.CopyFrom(pb.UserFilter(tags=tags, language_codes=language_codes))
    if reply_markup is not None:
        request.reply_markup.CopyFrom(reply_markup)
    if link_preview_options is not None:
        request.link_preview_options.CopyFrom(link_preview_options)
    if source is not None:
        request.source.CopyFrom(source)
    if send_at is not None:
        request.send_at.FromDatetime(send_at)
    return request


class BroadcastClient:
    """The service's gRPC API over one channel; an async context manager.

    ``target`` is ``host:port``; ``token`` one of the server's API tokens, sent as
    ``authorization: Bearer <token>`` metadata on every call (never logged or shown in
    errors). ``secure=True`` uses TLS with the system's roots (or pass ``credentials``).
    Unary calls time out after ``timeout`` seconds (``None``: never); ``watch`` never does.
    Every failure raises a :class:`~tgbroadcast_client.BroadcastClientError` subclass.
    """

    def __init__(
        self,
        target: str,
        token: str,
        *,
        secure: bool = False,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float | None = 30.0,
    ) -> None:
        if not token:
            raise ValueError("an API token is required")
        self.target = target
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._timeout = timeout
        if credentials is None and secure:
            credentials = grpc.ssl_channel_credentials()
        self._channel = (
            grpc.aio.insecure_channel(target)
            if credentials is None
            else grpc.aio.secure_channel(target, credentials)
        )
        self._stub = pb_grpc.BroadcastServiceStub(self._channel)

    def __repr__(self) -> str:
        return f"BroadcastClient(target={self.target!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the channel; calls in progress are cancelled."""
        await self._channel.close()

    async def _unary(
        self, method: grpc.aio.UnaryUnaryMultiCallable[Request, Response], request: Request
    ) -> Response:
        try:
            return await method(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from exc

    # Broadcasts

    async def send(
        self, message: str = "", **fields: Unpack[MessageFields]
    ) -> pb.SendMessageResponse:
        """Creates a broadcast; ``fields`` are :func:`message_request`'s keyword arguments.

        Returns once the broadcast is stored: ``broadcast_id``, ``status``, ``total`` and
        ``replayed`` (an earlier request with the same ``idempotency_key`` created it).
        """
        return await self.send_request(message_request(message, **fields))

    async def send_request(self, request: pb.SendMessageRequest) -> pb.SendMessageResponse:
        """Creates a broadcast from a ready ``SendMessageRequest``."""
        return await self._unary(self._stub.SendMessage, request)

    async def get(self, broadcast_id: int) -> pb.Broadcast:
        """The broadcast's state, counters and ``outcome_counts``."""
        response = await self._unary(
            self._stub.GetBroadcast, pb.GetBroadcastRequest(broadcast_id=broadcast_id)
        )
        return response.broadcast

    async def watch(self, broadcast_id: int) -> AsyncGenerator[pb.WatchBroadcastResponse, None]:
        """Every recipient's final outcome, exactly once each: first those already known,
        then live ones. The last message has no ``result`` and carries the final status;
        leaving the loop early cancels the stream."""
        call = self._stub.WatchBroadcast(
            pb.WatchBroadcastRequest(broadcast_id=broadcast_id), metadata=self._metadata
        )
        try:
            async for message in call:
                yield message
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from exc
        finally:
            call.cancel()

    async def list_broadcasts(
        self, *, statuses: Iterable[StatusArg] = (), page_size: int = 0, page_token: str = ""
    ) -> pb.ListBroadcastsResponse:
        """One page of broadcasts, newest first (``next_page_token`` is empty on the last)."""
        request = pb.ListBroadcastsRequest(
            statuses=[status_value(s) for s in statuses],
            page_size=page_size,
            page_token=page_token,
        )
        return await self._unary(self._stub.ListBroadcasts, request)

    async def cancel(self, broadcast_id: int) -> pb.Broadcast:
        """Stops the broadcast for good; raises FailedPrecondition when it already ended."""
        request = pb.CancelBroadcastRequest(broadcast_id=broadcast_id)
        return (await self._unary(self._stub.CancelBroadcast, request)).broadcast

    async def pause(self, broadcast_id: int) -> pb.Broadcast:
        """Holds a queued or running broadcast until :meth:`resume`."""
        request = pb.PauseBroadcastRequest(broadcast_id=broadcast_id)
        return (await self._unary(self._stub.PauseBroadcast, request)).broadcast

    async def resume(self, broadcast_id: int) -> pb.Broadcast:
        """Continues a paused broadcast; nobody is sent to twice."""
        request = pb.ResumeBroadcastRequest(broadcast_id=broadcast_id)
        return (await self._unary(self._stub.ResumeBroadcast, request)).broadcast

    async def list_deliveries(
        self,
        broadcast_id: int,
        *,
        outcomes: Iterable[OutcomeArg] = (),
        page_size: int = 0,
        page_token: str = "",
    ) -> pb.ListDeliveriesResponse:
        """One page of the broadcast's recipients and outcomes, by user id."""
        request = pb.ListDeliveriesRequest(
            broadcast_id=broadcast_id,
            outcomes=[outcome_value(o) for o in outcomes],
            page_size=page_size,
            page_token=page_token,
        )
        return await self._unary(self._stub.ListDeliveries, request)

    async def preview(
        self, message: pb.SendMessageRequest, *, user_id: int = 0
    ) -> pb.PreviewMessageResponse:
        """``message`` rendered for ``user_id`` as it would be sent; nothing is sent."""
        request = pb.PreviewMessageRequest(message=message, user_id=user_id)
        return await self._unary(self._stub.PreviewMessage, request)

    # Users

    async def upsert_users(self, users: Iterable[pb.User]) -> int:
        """Creates or updates users by id (at most 10,000 a call); the number upserted."""
        request = pb.UpsertUsersRequest(users=list(users))
        return (await self._unary(self._stub.UpsertUsers, request)).upserted

    async def import_users(
        self, chunks: AsyncIterable[Iterable[pb.User]] | Iterable[Iterable[pb.User]]
    ) -> int:
        """Streams users in chunks (at most 10,000 each, each committed as it arrives); the
        number imported over all chunks."""

        async def requests() -> AsyncIterator[pb.ImportUsersRequest]:
            if isinstance(chunks, AsyncIterable):
                async for chunk in chunks:
                    yield pb.ImportUsersRequest(users=list(chunk))
            else:
                for chunk in chunks:
                    yield pb.ImportUsersRequest(users=list(chunk))

        try:
            response = await self._stub.ImportUsers(
                requests(), metadata=self._metadata, timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from exc
        return response.imported

    async def list_users(
        self,
        *,
        tags: Iterable[str] = (),
        language_codes: Iterable[str] = (),
        active_only: bool = False,
        page_size: int = 0,
        page_token: str = "",
    ) -> pb.ListUsersResponse:
        """One page of users, by id (``next_page_token`` is empty on the last)."""
        request = pb.ListUsersRequest(
            page_size=page_size, page_token=page_token, active_only=active_only
        )
        tags, language_codes = list(tags), list(language_codes)
        if tags or language_codes:
            request.filter.CopyFrom(pb.UserFilter(tags=tags, language_codes=language_codes))
        return await self._unary(self._stub.ListUsers, request)

    async def iter_users(
        self,
        *,
        tags: Iterable[str] = (),
        language_codes: Iterable[str] = (),
        active_only: bool = False,
        page_size: int = 0,
    ) -> AsyncIterator[pb.User]:
        """Every matching user, by id, fetched a page at a time."""
        tags, language_codes = list(tags), list(language_codes)
        page_token = ""
        while True:
            page = await self.list_users(
                tags=tags,
                language_codes=language_codes,
                active_only=active_only,
                page_size=page_size,
                page_token=page_token,
            )
            for user in page.users:
                yield user
            if not page.next_page_token:
                return
            page_token = page.next_page_token

    async def get_user(self, user_id: int) -> pb.User:
        """One user; raises NotFound for an unknown id."""
        request = pb.GetUserRequest(user_id=user_id)
        return (await self._unary(self._stub.GetUser, request)).user

    async def delete_user(self, user_id: int) -> None:
        """Forgets the user (past deliveries are kept); raises NotFound for an unknown id."""
        await self._unary(self._stub.DeleteUser, pb.DeleteUserRequest(user_id=user_id))
