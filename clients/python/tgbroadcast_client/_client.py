"""``BroadcastClient``: the gRPC API from asyncio, typed, with our errors.

Calls return the generated protobuf messages (``tgbroadcast.v1.broadcast_pb2``): they are
the contract, documented in ``proto/tgbroadcast/v1/broadcast.proto``. Enum arguments take
either the proto value (``pb.MEDIA_TYPE_PHOTO``) or the REST spelling (``"photo"``). The
blocking twin, :class:`~tgbroadcast_client.Client`, builds its requests in the same place
(``_requests``) and raises the same errors.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable
from types import TracebackType
from typing import Self, TypeVar, Unpack

import grpc

from tgbroadcast.v1 import broadcast_pb2 as pb
from tgbroadcast.v1 import broadcast_pb2_grpc as pb_grpc
from tgbroadcast_client._errors import error_from_rpc
from tgbroadcast_client._requests import (
    CallOptions,
    MessageFields,
    OutcomeArg,
    ParseModeArg,
    PathArg,
    StatusArg,
    channel_credentials,
    create_bot_request,
    edit_request,
    enum_name,
    enum_names,
    import_users_request,
    list_broadcasts_request,
    list_deliveries_request,
    list_users_request,
    media_type_value,
    message_request,
    outcome_value,
    parse_mode_value,
    status_value,
)

# Re-exported: these lived here before the blocking client shared them.
__all__ = [
    "BroadcastClient",
    "MessageFields",
    "enum_name",
    "enum_names",
    "media_type_value",
    "message_request",
    "outcome_value",
    "parse_mode_value",
    "status_value",
]

Request = TypeVar("Request")
Response = TypeVar("Response")


class BroadcastClient:
    """The service's gRPC API over one channel; an async context manager.

    ``target`` is ``host:port``; ``token`` one of the server's API tokens, sent as
    ``authorization: Bearer <token>`` metadata on every call (never logged or shown in
    errors). ``secure=True`` uses TLS with the system's roots; ``ca_file`` (PEM) checks the
    server's certificate against that CA instead, and ``cert_file`` + ``key_file`` present a
    client certificate to a server that requires mutual TLS (either implies TLS); or pass
    ready ``credentials``.
    Unary calls time out after ``timeout`` seconds (``None``: never); ``watch`` and
    ``import_users`` (unless given one of their own) never do.
    Every failure raises a :class:`~tgbroadcast_client.BroadcastClientError` subclass.

    Calls that send, list broadcasts or touch users take ``bot=`` (a bot's name): empty, the
    server picks the token's only bot, else ``default``. A broadcast is found by its id
    alone, so ``get``, ``watch`` and the controls take no bot.
    """

    def __init__(
        self,
        target: str,
        token: str,
        *,
        secure: bool = False,
        credentials: grpc.ChannelCredentials | None = None,
        ca_file: PathArg | None = None,
        cert_file: PathArg | None = None,
        key_file: PathArg | None = None,
        timeout: float | None = 30.0,
    ) -> None:
        self._options = CallOptions.for_token(token, timeout)
        self.target = target
        credentials = channel_credentials(
            secure, credentials, ca_file=ca_file, cert_file=cert_file, key_file=key_file
        )
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
            return await method(
                request, metadata=self._options.metadata, timeout=self._options.timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from exc

    # Broadcasts

    async def send(
        self, message: str = "", **fields: Unpack[MessageFields]
    ) -> pb.SendMessageResponse:
        """Creates a broadcast; ``fields`` are :func:`message_request`'s keyword arguments
        (``bot=`` among them).

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

    async def watch(
        self, broadcast_id: int, *, after: str = "", max_batch: int = 0, from_now: bool = False
    ) -> AsyncGenerator[pb.WatchBroadcastResponse, None]:
        """Every recipient's final outcome, exactly once each: first those already known,
        then live ones. The last message has no ``result`` and carries the final status;
        leaving the loop early cancels the stream. ``after``: the ``cursor`` of the last
        message of an earlier stream, to resume right after it. ``max_batch`` (up to 1000):
        several outcomes per message, in ``results`` (those ready when the server writes;
        for a fast broadcast). ``from_now`` (without ``after``): none of the outcomes known
        already, only those recorded from now on."""
        request = pb.WatchBroadcastRequest(
            broadcast_id=broadcast_id, after=after, max_batch=max_batch, from_now=from_now
        )
        call = self._stub.WatchBroadcast(request, metadata=self._options.metadata)
        try:
            async for message in call:
                yield message
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from exc
        finally:
            call.cancel()

    async def list_broadcasts(
        self,
        *,
        statuses: Iterable[StatusArg] = (),
        page_size: int = 0,
        page_token: str = "",
        bot: str = "",
    ) -> pb.ListBroadcastsResponse:
        """One page of broadcasts, newest first (``next_page_token`` is empty on the last):
        ``bot``'s only, or (empty) those of every bot the token may use."""
        request = list_broadcasts_request(statuses, page_size, page_token, bot)
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

    async def recall(self, broadcast_id: int) -> pb.Broadcast:
        """Deletes the broadcast's messages from every chat that received them; nothing more
        is sent. Each recipient's ``recall`` outcome comes through :meth:`watch`."""
        request = pb.RecallBroadcastRequest(broadcast_id=broadcast_id)
        return (await self._unary(self._stub.RecallBroadcast, request)).broadcast

    async def edit(
        self,
        broadcast_id: int,
        message: str = "",
        *,
        parse_mode: ParseModeArg = "",
        entities: Iterable[pb.MessageEntity] = (),
        reply_markup: pb.InlineKeyboardMarkup | None = None,
        media_url: str = "",
    ) -> pb.Broadcast:
        """Gives every message sent, and the recipients not sent yet, new content: the text
        or caption, its formatting, the keyboard (``None`` removes it) and new media (empty:
        kept). Each sent recipient's ``edit`` outcome comes through :meth:`watch`."""
        request = edit_request(
            broadcast_id,
            message,
            parse_mode=parse_mode,
            entities=entities,
            reply_markup=reply_markup,
            media_url=media_url,
        )
        return (await self._unary(self._stub.EditBroadcast, request)).broadcast

    async def list_deliveries(
        self,
        broadcast_id: int,
        *,
        outcomes: Iterable[OutcomeArg] = (),
        page_size: int = 0,
        page_token: str = "",
    ) -> pb.ListDeliveriesResponse:
        """One page of the broadcast's recipients and outcomes, by user id."""
        request = list_deliveries_request(broadcast_id, outcomes, page_size, page_token)
        return await self._unary(self._stub.ListDeliveries, request)

    async def preview(
        self,
        message: pb.SendMessageRequest | None = None,
        *,
        user_id: int = 0,
        broadcast_id: int = 0,
        variant: str = "",
    ) -> pb.PreviewMessageResponse:
        """``message`` (or the stored broadcast ``broadcast_id``'s content) rendered for
        ``user_id`` as it would be sent, in ``variant`` (default: the user's); nothing is
        sent."""
        request = pb.PreviewMessageRequest(
            message=message, user_id=user_id, broadcast_id=broadcast_id, variant=variant
        )
        return await self._unary(self._stub.PreviewMessage, request)

    # Users

    async def upsert_users(self, users: Iterable[pb.User], *, bot: str = "") -> int:
        """Creates or updates ``bot``'s users by id (at most 10,000 a call); the number
        upserted."""
        request = pb.UpsertUsersRequest(users=list(users), bot=bot)
        return (await self._unary(self._stub.UpsertUsers, request)).upserted

    async def import_users(
        self,
        chunks: AsyncIterable[Iterable[pb.User]] | Iterable[Iterable[pb.User]],
        *,
        bot: str = "",
        timeout: float | None = None,  # noqa: ASYNC109 - gRPC's deadline: the server sees it too
    ) -> int:
        """Streams ``bot``'s users in chunks (at most 10,000 each, each committed as it
        arrives); the number imported over all chunks. ``timeout``: seconds for the whole
        stream (``None``, the default: no deadline — millions of users take minutes; the
        client's unary timeout does not apply)."""

        async def requests() -> AsyncIterator[pb.ImportUsersRequest]:
            if isinstance(chunks, AsyncIterable):
                async for chunk in chunks:
                    yield import_users_request(chunk, bot)
            else:
                for chunk in chunks:
                    yield import_users_request(chunk, bot)

        try:
            response = await self._stub.ImportUsers(
                requests(), metadata=self._options.metadata, timeout=timeout
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
        bot: str = "",
    ) -> pb.ListUsersResponse:
        """One page of ``bot``'s users, by id (``next_page_token`` is empty on the last)."""
        request = list_users_request(
            tags=tags,
            language_codes=language_codes,
            active_only=active_only,
            page_size=page_size,
            page_token=page_token,
            bot=bot,
        )
        return await self._unary(self._stub.ListUsers, request)

    async def iter_users(
        self,
        *,
        tags: Iterable[str] = (),
        language_codes: Iterable[str] = (),
        active_only: bool = False,
        page_size: int = 0,
        bot: str = "",
    ) -> AsyncIterator[pb.User]:
        """Every matching user of ``bot``, by id, fetched a page at a time."""
        tags, language_codes = list(tags), list(language_codes)
        page_token = ""
        while True:
            page = await self.list_users(
                tags=tags,
                language_codes=language_codes,
                active_only=active_only,
                page_size=page_size,
                page_token=page_token,
                bot=bot,
            )
            for user in page.users:
                yield user
            if not page.next_page_token:
                return
            page_token = page.next_page_token

    async def get_user(self, user_id: int, *, bot: str = "") -> pb.User:
        """One of ``bot``'s users; raises NotFound for an id it does not know."""
        request = pb.GetUserRequest(user_id=user_id, bot=bot)
        return (await self._unary(self._stub.GetUser, request)).user

    async def delete_user(self, user_id: int, *, bot: str = "") -> None:
        """Forgets ``bot``'s user (past deliveries are kept); raises NotFound for an id it
        does not know. The same id under another bot is another user, untouched."""
        request = pb.DeleteUserRequest(user_id=user_id, bot=bot)
        await self._unary(self._stub.DeleteUser, request)

    # Bots (scope bots:admin)

    async def create_bot(
        self,
        name: str,
        token: str,
        *,
        rate_limit: float = 0.0,
        paid_rate_limit: float = 0.0,
        api_url: str = "",
    ) -> pb.Bot:
        """Adds a bot: the server checks ``token`` with Telegram's getMe (InvalidArgument on
        field ``token`` with Telegram's description when it fails) and stores it encrypted;
        it is never returned. Zero limits and an empty ``api_url`` take the server's
        ``telegram:`` settings. AlreadyExists when the name (or the token) is taken;
        FailedPrecondition when the server has no ``server.secret_key``."""
        request = create_bot_request(
            name, token, rate_limit=rate_limit, paid_rate_limit=paid_rate_limit, api_url=api_url
        )
        return (await self._unary(self._stub.CreateBot, request)).bot

    async def list_bots(self) -> list[pb.Bot]:
        """The bots the token may use, configured and created, by name."""
        response = await self._unary(self._stub.ListBots, pb.ListBotsRequest())
        return list(response.bots)

    async def get_bot(self, name: str) -> pb.Bot:
        """One bot; raises NotFound when unknown or not the token's."""
        return (await self._unary(self._stub.GetBot, pb.GetBotRequest(name=name))).bot

    async def delete_bot(self, name: str) -> None:
        """Removes a bot created through the API; its broadcasts and users stay readable.
        FailedPrecondition while it has unfinished broadcasts, or for a configured bot."""
        await self._unary(self._stub.DeleteBot, pb.DeleteBotRequest(name=name))
