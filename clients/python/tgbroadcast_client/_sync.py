"""``Client``: the gRPC API without asyncio, for Django and Flask views, Celery tasks and
scripts — :class:`~tgbroadcast_client.BroadcastClient`'s blocking twin.

The two are one client in two calling styles (httpx's ``Client`` and ``AsyncClient``): the
same constructor options, the same methods with the same arguments, the same protobuf
results and the same errors; both build their requests in ``_requests`` and translate
failures in ``_errors``. Where the async client returns an async iterator, this one returns
a plain iterator.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator
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
    import_users_request,
    list_broadcasts_request,
    list_deliveries_request,
    list_users_request,
    message_request,
)

Request = TypeVar("Request")
Response = TypeVar("Response")


class Client:
    """The service's gRPC API over one channel, blocking; a context manager.

    ``target`` is ``host:port``; ``token`` one of the server's API tokens, sent as
    ``authorization: Bearer <token>`` metadata on every call (never logged or shown in
    errors). ``secure=True`` uses TLS with the system's roots; ``ca_file`` (PEM) checks the
    server's certificate against that CA instead, and ``cert_file`` + ``key_file`` present a
    client certificate to a server that requires mutual TLS (either implies TLS); or pass
    ready ``credentials``.
    Unary calls time out after ``timeout`` seconds (``None``: never); ``watch`` and
    ``import_users`` (unless given one of their own) never do. Every failure raises a
    :class:`~tgbroadcast_client.BroadcastClientError` subclass. Calls that send, list
    broadcasts or touch users take ``bot=``, as the async client's do.

    ``channel`` hands the client a ready ``grpc.Channel`` instead (your own options or
    interceptors, or ``grpc_testing``'s channel in tests); ``target`` then only names it.
    The client closes the channel either way.

    One client may serve many threads at once (a gRPC channel is thread-safe). Open it after
    a fork, not before: a channel does not survive into a child process (Celery's prefork
    workers, gunicorn's ``preload_app``).
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
        channel: grpc.Channel | None = None,
    ) -> None:
        self._options = CallOptions.for_token(token, timeout)
        self.target = target
        if channel is None:
            credentials = channel_credentials(
                secure, credentials, ca_file=ca_file, cert_file=cert_file, key_file=key_file
            )
            channel = (
                grpc.insecure_channel(target)
                if credentials is None
                else grpc.secure_channel(target, credentials)
            )
        elif secure or credentials is not None or ca_file or cert_file or key_file:
            raise ValueError("pass TLS options or a ready channel, not both")
        self._channel = channel
        self._stub = pb_grpc.BroadcastServiceStub(channel)

    def __repr__(self) -> str:
        return f"Client(target={self.target!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Closes the channel; calls in progress are cancelled."""
        self._channel.close()

    def _unary(
        self, method: grpc.UnaryUnaryMultiCallable[Request, Response], request: Request
    ) -> Response:
        try:
            return method(request, metadata=self._options.metadata, timeout=self._options.timeout)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from exc

    # Broadcasts

    def send(self, message: str = "", **fields: Unpack[MessageFields]) -> pb.SendMessageResponse:
        """Creates a broadcast; ``fields`` are :func:`message_request`'s keyword arguments
        (``bot=`` among them).

        Returns once the broadcast is stored: ``broadcast_id``, ``status``, ``total`` and
        ``replayed`` (an earlier request with the same ``idempotency_key`` created it).
        """
        return self.send_request(message_request(message, **fields))

    def send_request(self, request: pb.SendMessageRequest) -> pb.SendMessageResponse:
        """Creates a broadcast from a ready ``SendMessageRequest``."""
        return self._unary(self._stub.SendMessage, request)

    def get(self, broadcast_id: int) -> pb.Broadcast:
        """The broadcast's state, counters and ``outcome_counts``."""
        request = pb.GetBroadcastRequest(broadcast_id=broadcast_id)
        return self._unary(self._stub.GetBroadcast, request).broadcast

    def watch(
        self, broadcast_id: int, *, after: str = "", max_batch: int = 0, from_now: bool = False
    ) -> Generator[pb.WatchBroadcastResponse, None, None]:
        """Every recipient's final outcome, exactly once each: first those already known,
        then live ones. The last message has no ``result`` and carries the final status.
        ``after``: the ``cursor`` of the last message of an earlier stream, to resume right
        after it. ``max_batch`` (up to 1000): several outcomes per message, in ``results``
        (those ready when the server writes; for a fast broadcast). ``from_now`` (without
        ``after``): none of the outcomes known already, only those recorded from now on.

        The stream starts at the first ``next()``. ``close()`` on the iterator cancels it
        (``with contextlib.closing(client.watch(id)) as updates:`` does so on the way out),
        as does the iterator being garbage collected.
        """
        request = pb.WatchBroadcastRequest(
            broadcast_id=broadcast_id, after=after, max_batch=max_batch, from_now=from_now
        )
        call = self._stub.WatchBroadcast(request, metadata=self._options.metadata)
        try:
            yield from call
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from exc
        finally:
            call.cancel()

    def list_broadcasts(
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
        return self._unary(self._stub.ListBroadcasts, request)

    def cancel(self, broadcast_id: int) -> pb.Broadcast:
        """Stops the broadcast for good; raises FailedPrecondition when it already ended."""
        request = pb.CancelBroadcastRequest(broadcast_id=broadcast_id)
        return self._unary(self._stub.CancelBroadcast, request).broadcast

    def pause(self, broadcast_id: int) -> pb.Broadcast:
        """Holds a queued or running broadcast until :meth:`resume`."""
        request = pb.PauseBroadcastRequest(broadcast_id=broadcast_id)
        return self._unary(self._stub.PauseBroadcast, request).broadcast

    def resume(self, broadcast_id: int) -> pb.Broadcast:
        """Continues a paused broadcast; nobody is sent to twice."""
        request = pb.ResumeBroadcastRequest(broadcast_id=broadcast_id)
        return self._unary(self._stub.ResumeBroadcast, request).broadcast

    def recall(self, broadcast_id: int) -> pb.Broadcast:
        """Deletes the broadcast's messages from every chat that received them; nothing more
        is sent. Each recipient's ``recall`` outcome comes through :meth:`watch`."""
        request = pb.RecallBroadcastRequest(broadcast_id=broadcast_id)
        return self._unary(self._stub.RecallBroadcast, request).broadcast

    def edit(
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
        return (self._unary(self._stub.EditBroadcast, request)).broadcast

    def list_deliveries(
        self,
        broadcast_id: int,
        *,
        outcomes: Iterable[OutcomeArg] = (),
        page_size: int = 0,
        page_token: str = "",
    ) -> pb.ListDeliveriesResponse:
        """One page of the broadcast's recipients and outcomes, by user id."""
        request = list_deliveries_request(broadcast_id, outcomes, page_size, page_token)
        return self._unary(self._stub.ListDeliveries, request)

    def preview(
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
        return self._unary(self._stub.PreviewMessage, request)

    # Users

    def upsert_users(self, users: Iterable[pb.User], *, bot: str = "") -> int:
        """Creates or updates ``bot``'s users by id (at most 10,000 a call); the number
        upserted."""
        request = pb.UpsertUsersRequest(users=list(users), bot=bot)
        return self._unary(self._stub.UpsertUsers, request).upserted

    def import_users(
        self, chunks: Iterable[Iterable[pb.User]], *, bot: str = "", timeout: float | None = None
    ) -> int:
        """Streams ``bot``'s users in chunks (at most 10,000 each, each committed as it
        arrives); the number imported over all chunks. ``chunks`` is read lazily, from
        gRPC's thread. ``timeout``: seconds for the whole stream (``None``, the default: no
        deadline — millions of users take minutes; the client's unary timeout does not
        apply)."""
        try:
            response = self._stub.ImportUsers(
                (import_users_request(chunk, bot) for chunk in chunks),
                metadata=self._options.metadata,
                timeout=timeout,
            )
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from exc
        return response.imported

    def list_users(
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
        return self._unary(self._stub.ListUsers, request)

    def iter_users(
        self,
        *,
        tags: Iterable[str] = (),
        language_codes: Iterable[str] = (),
        active_only: bool = False,
        page_size: int = 0,
        bot: str = "",
    ) -> Iterator[pb.User]:
        """Every matching user of ``bot``, by id, fetched a page at a time."""
        tags, language_codes = list(tags), list(language_codes)
        page_token = ""
        while True:
            page = self.list_users(
                tags=tags,
                language_codes=language_codes,
                active_only=active_only,
                page_size=page_size,
                page_token=page_token,
                bot=bot,
            )
            yield from page.users
            if not page.next_page_token:
                return
            page_token = page.next_page_token

    def get_user(self, user_id: int, *, bot: str = "") -> pb.User:
        """One of ``bot``'s users; raises NotFound for an id it does not know."""
        request = pb.GetUserRequest(user_id=user_id, bot=bot)
        return self._unary(self._stub.GetUser, request).user

    def delete_user(self, user_id: int, *, bot: str = "") -> None:
        """Forgets ``bot``'s user (past deliveries are kept); raises NotFound for an id it
        does not know. The same id under another bot is another user, untouched."""
        self._unary(self._stub.DeleteUser, pb.DeleteUserRequest(user_id=user_id, bot=bot))

    # Bots (scope bots:admin)

    def create_bot(
        self,
        name: str,
        token: str,
        *,
        rate_limit: float = 0.0,
        paid_rate_limit: float = 0.0,
        api_url: str = "",
    ) -> pb.Bot:
        """Adds a bot, its ``token`` checked with getMe and stored encrypted (never
        returned); as :meth:`BroadcastClient.create_bot
        <tgbroadcast_client.BroadcastClient.create_bot>`."""
        request = create_bot_request(
            name, token, rate_limit=rate_limit, paid_rate_limit=paid_rate_limit, api_url=api_url
        )
        return self._unary(self._stub.CreateBot, request).bot

    def list_bots(self) -> list[pb.Bot]:
        """The bots the token may use, configured and created, by name."""
        return list(self._unary(self._stub.ListBots, pb.ListBotsRequest()).bots)

    def get_bot(self, name: str) -> pb.Bot:
        """One bot; raises NotFound when unknown or not the token's."""
        return self._unary(self._stub.GetBot, pb.GetBotRequest(name=name)).bot

    def delete_bot(self, name: str) -> None:
        """Removes a bot created through the API; its broadcasts and users stay readable.
        FailedPrecondition while it has unfinished broadcasts, or for a configured bot."""
        self._unary(self._stub.DeleteBot, pb.DeleteBotRequest(name=name))
