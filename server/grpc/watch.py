"""``WatchBroadcast``'s stream: a place among the server's open watch streams
(:mod:`tgbroadcast.server.streams`), the broadcast's updates, and the end when it drains.

The server sends the initial metadata (``tgb-watch: open``) as soon as the stream holds its
place, so a client knows its watch is open before the first outcome. More than
``server.max_watchers`` open streams → ``RESOURCE_EXHAUSTED``; when the server drains, the
stream ends ``UNAVAILABLE`` ("server shutting down") at once, so the client reconnects to
another instance.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any, Final

import grpc

from tgbroadcast.core.service.bot_access import Visible
from tgbroadcast.core.service.broadcasting import BroadcastingService
from tgbroadcast.server.grpc import messages
from tgbroadcast.server.streams import (
    SHUTTING_DOWN,
    ShuttingDown,
    StreamClosing,
    TooManyWatchers,
    Watchers,
)
from tgbroadcast.v1 import broadcast_pb2 as pb

OPEN_METADATA: Final = (("tgb-watch", "open"),)
"""The initial metadata of a watch the server opened (a refused one ends without it)."""


async def watch_broadcast(
    core: BroadcastingService,
    watchers: Watchers,
    broadcast_id: int,
    context: grpc.aio.ServicerContext[Any, Any],
    *,
    visible: Visible = None,
) -> AsyncIterator[pb.WatchBroadcastResponse]:
    """The stream's messages; aborts with the statuses above (the core's errors pass: a
    broadcast whose bot is not ``visible`` is NOT_FOUND, as a missing one)."""
    try:
        slot = watchers.acquire()
    except TooManyWatchers as exc:
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
    except ShuttingDown as exc:
        await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
    try:
        await context.send_initial_metadata(OPEN_METADATA)
        async with aclosing(core.watch(broadcast_id, visible=visible)) as updates:
            while True:
                try:
                    update = await slot.wait(anext(updates))
                except StopAsyncIteration:
                    return
                except StreamClosing as closing:
                    try:  # the status leaves at once; the read's clean-up comes after
                        await context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
                    finally:
                        await closing.settle()
                yield messages.watch_update(update)
    finally:
        slot.release()
