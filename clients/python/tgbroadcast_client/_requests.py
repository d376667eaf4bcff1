"""What both clients send: request messages built from keyword arguments, the REST spellings
of the proto enums, and the metadata and deadline every call carries.

:class:`~tgbroadcast_client.BroadcastClient` (asyncio) and :class:`~tgbroadcast_client.Client`
(blocking) build every request here, so the two send the same bytes for the same arguments.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeAlias, TypedDict

import grpc
from google.protobuf.descriptor import EnumDescriptor

from tgbroadcast.v1 import broadcast_pb2 as pb

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
    """:func:`message_request`'s keyword arguments (and so both clients' ``send``)."""

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
    max_stars: int
    variants: Iterable[pb.Variant]
    track_clicks: bool
    idempotency_key: str
    send_at: datetime | None
    callback_url: str
    personalize: bool
    bot: str


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
    max_stars: int = 0,
    variants: Iterable[pb.Variant] = (),
    track_clicks: bool = False,
    idempotency_key: str = "",
    send_at: datetime | None = None,
    callback_url: str = "",
    personalize: bool = False,
    bot: str = "",
) -> pb.SendMessageRequest:
    """A ``SendMessageRequest`` from keyword arguments (what ``send`` sends). The audience is
    ``user_ids``, ``all_users``, or a filter by ``tags`` and/or ``language_codes``; the
    server refuses a request with none or several. ``bot`` names the bot that sends it and
    whose users the audience is; empty: the token's only bot, else ``default``. ``variants``
    (``pb.Variant``, each with its own content) replace the content arguments: each
    recipient gets one of them. ``track_clicks`` leads the links through the service (it
    needs ``server.public_url``). ``send_at`` must say its time zone (a naive datetime is
    refused with ``ValueError``: read as UTC it would be hours off on most machines)."""
    if send_at is not None and send_at.utcoffset() is None:
        raise ValueError(f"send_at needs a time zone (e.g. tzinfo=UTC), got {send_at!r}")
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
        max_stars=max_stars,
        variants=list(variants),
        track_clicks=track_clicks,
        idempotency_key=idempotency_key,
        callback_url=callback_url,
        personalize=personalize,
        bot=bot,
    )
    filter_ = user_filter(tags, language_codes)
    if filter_ is not None:
        request.filter.CopyFrom(filter_)
    if reply_markup is not None:
        request.reply_markup.CopyFrom(reply_markup)
    if link_preview_options is not None:
        request.link_preview_options.CopyFrom(link_preview_options)
    if source is not None:
        request.source.CopyFrom(source)
    if send_at is not None:
        request.send_at.FromDatetime(send_at)
    return request


def edit_request(
    broadcast_id: int,
    message: str = "",
    *,
    parse_mode: ParseModeArg = "",
    entities: Iterable[pb.MessageEntity] = (),
    reply_markup: pb.InlineKeyboardMarkup | None = None,
    media_url: str = "",
) -> pb.EditBroadcastRequest:
    """An ``EditBroadcastRequest``: the new text or caption, its formatting, the keyboard
    (``None`` removes it, as Telegram's edits do) and new media (empty: kept)."""
    request = pb.EditBroadcastRequest(
        broadcast_id=broadcast_id,
        message=message,
        parse_mode=parse_mode_value(parse_mode),
        entities=list(entities),
        media_url=media_url,
    )
    if reply_markup is not None:
        request.reply_markup.CopyFrom(reply_markup)
    return request


def user_filter(tags: Iterable[str], language_codes: Iterable[str]) -> pb.UserFilter | None:
    """The audience filter, or ``None`` when neither tags nor languages are given."""
    tags, language_codes = list(tags), list(language_codes)
    if not tags and not language_codes:
        return None
    return pb.UserFilter(tags=tags, language_codes=language_codes)


def list_broadcasts_request(
    statuses: Iterable[StatusArg], page_size: int, page_token: str, bot: str = ""
) -> pb.ListBroadcastsRequest:
    return pb.ListBroadcastsRequest(
        statuses=[status_value(s) for s in statuses],
        page_size=page_size,
        page_token=page_token,
        bot=bot,
    )


def list_deliveries_request(
    broadcast_id: int, outcomes: Iterable[OutcomeArg], page_size: int, page_token: str
) -> pb.ListDeliveriesRequest:
    return pb.ListDeliveriesRequest(
        broadcast_id=broadcast_id,
        outcomes=[outcome_value(o) for o in outcomes],
        page_size=page_size,
        page_token=page_token,
    )


def list_users_request(
    *,
    tags: Iterable[str],
    language_codes: Iterable[str],
    active_only: bool,
    page_size: int,
    page_token: str,
    bot: str = "",
) -> pb.ListUsersRequest:
    request = pb.ListUsersRequest(
        page_size=page_size, page_token=page_token, active_only=active_only, bot=bot
    )
    filter_ = user_filter(tags, language_codes)
    if filter_ is not None:
        request.filter.CopyFrom(filter_)
    return request


def import_users_request(chunk: Iterable[pb.User], bot: str = "") -> pb.ImportUsersRequest:
    """One chunk of an ``ImportUsers`` stream (at most 10,000 users); every chunk names the
    same ``bot`` (the server reads it from the first)."""
    return pb.ImportUsersRequest(users=list(chunk), bot=bot)


def create_bot_request(
    name: str,
    token: str,
    *,
    rate_limit: float = 0.0,
    paid_rate_limit: float = 0.0,
    api_url: str = "",
) -> pb.CreateBotRequest:
    """A ``CreateBotRequest``; zero limits and an empty ``api_url`` take the server's
    ``telegram:`` settings. The message holds the bot token: never log it."""
    return pb.CreateBotRequest(
        name=name,
        token=token,
        rate_limit=rate_limit,
        paid_rate_limit=paid_rate_limit,
        api_url=api_url,
    )


@dataclass(frozen=True, slots=True)
class CallOptions:
    """What every call carries: the token as ``authorization: Bearer <token>`` metadata (left
    out of ``repr``) and the deadline of unary and client-streaming calls (``None``: none).
    ``WatchBroadcast`` carries no deadline: it lasts as long as the broadcast."""

    metadata: tuple[tuple[str, str], ...] = field(repr=False)
    timeout: float | None

    @classmethod
    def for_token(cls, token: str, timeout: float | None) -> CallOptions:
        if not token:
            raise ValueError("an API token is required")
        return cls((("authorization", f"Bearer {token}"),), timeout)


PathArg: TypeAlias = "str | os.PathLike[str]"


def channel_credentials(
    secure: bool,
    credentials: grpc.ChannelCredentials | None,
    *,
    ca_file: PathArg | None = None,
    cert_file: PathArg | None = None,
    key_file: PathArg | None = None,
) -> grpc.ChannelCredentials | None:
    """The TLS credentials to open the channel with, else ``None`` (plaintext).

    ``credentials`` if given (then no files); TLS when ``secure`` or any file is named:
    the server's certificate checked against ``ca_file`` (PEM; default: the system's roots),
    and, for a server that requires mutual TLS, the client's own ``cert_file`` and
    ``key_file`` (PEM, both or neither). A file that cannot be read raises ``OSError``.
    """
    files = (ca_file, cert_file, key_file)
    if credentials is not None:
        if any(path is not None for path in files):
            raise ValueError("pass credentials or ca_file/cert_file/key_file, not both")
        return credentials
    if (cert_file is None) != (key_file is None):
        raise ValueError("cert_file and key_file go together: the client certificate and its key")
    if not secure and all(path is None for path in files):
        return None
    root, chain, key = (None if path is None else Path(path).read_bytes() for path in files)
    return grpc.ssl_channel_credentials(
        root_certificates=root, private_key=key, certificate_chain=chain
    )
