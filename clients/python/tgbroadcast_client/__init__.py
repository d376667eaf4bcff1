"""Typed clients for the Telegram Broadcast Service's gRPC API, and its CLI.

``BroadcastClient`` is for asyncio code (aiogram bots, aiohttp or FastAPI apps)::

    from tgbroadcast_client import BroadcastClient

    async with BroadcastClient("localhost:50051", token) as client:
        sent = await client.send("Hello!", user_ids=[111, 222])
        async for update in client.watch(sent.broadcast_id):
            print(update.progress.sent, "of", update.progress.total)

``Client`` is its blocking twin, for code without an event loop (Django, Flask, Celery
tasks, scripts): the same constructor, the same methods, plain iterators::

    from tgbroadcast_client import Client

    with Client("localhost:50051", token) as client:
        sent = client.send("Hello!", user_ids=[111, 222])
        for update in client.watch(sent.broadcast_id):
            print(update.progress.sent, "of", update.progress.total)

Calls return the generated protobuf messages of ``tgbroadcast.v1``; failures raise one of
the errors below (see ``_errors`` for the tree). On a service with several bots, the calls
that send, list broadcasts or touch users take ``bot="name"`` (without it the server picks
the token's only bot, else ``default``), and ``create_bot`` / ``list_bots`` / ``get_bot`` /
``delete_bot`` manage the bots. The command line is ``tgbroadcast send`` (``cli``) and
``tgbroadcast bots`` (``cli_bots``).

May import: ``tgbroadcast.v1`` only (it is the client: never the service).
"""

from tgbroadcast_client._client import BroadcastClient
from tgbroadcast_client._errors import (
    AlreadyExists,
    BroadcastClientError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    error_from_rpc,
)
from tgbroadcast_client._requests import (
    MessageFields,
    enum_name,
    enum_names,
    media_type_value,
    message_request,
    outcome_value,
    parse_mode_value,
    status_value,
)
from tgbroadcast_client._sync import Client

__all__ = [
    "AlreadyExists",
    "BroadcastClient",
    "BroadcastClientError",
    "Client",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "MessageFields",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "enum_name",
    "enum_names",
    "error_from_rpc",
    "media_type_value",
    "message_request",
    "outcome_value",
    "parse_mode_value",
    "status_value",
]
