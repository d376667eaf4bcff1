"""``WatchBroadcast``'s and ``WatchBroadcasts``' streams: a place among the server's open
watch streams (:mod:`tgbroadcast.server.streams`), the updates, and the end when it drains.

The server sends the initial metadata (``tgb-watch: open``) as soon as the stream holds its
place, so a client knows its watch is open before the first outcome. More than
``server.max_watchers`` open streams → ``RESOURCE_EXHAUSTED``; when the server drains, the
stream ends ``UNAVAILABLE`` ("server shutting down") at once, so the client reconnects to
another instance.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing
from typing import Any, Final, NoReturn, TypeVar, cast

import grpc

from tgbroadcast.core.domain.errors import InvalidArgument
from tgbroadcast.core.domain.model import Broadcast
from tgbroadcast.core.service.bot_access import Visible
from tgbroadcast.core.service.broadcasting import BroadcastingService
from tgbroadcast.core.service.cursors import KeptFloor
from tgbroadcast.core.service.list_watching import Ready
from tgbroadcast.server.grpc import messages
from tgbroadcast.server.streams import (
    END,
    SHUTTING_DOWN,
    ReadAhead,
    ShuttingDown,
    StreamClosing,
    TooManyWatchers,
    Watchers,
    one_by_one,
)
from tgbroadcast.v1 import broadcast_pb2 as pb

OPEN_METADATA: Final = (("tgb-watch", "open"),)
"""The initial metadata of a watch the server opened (a refused one ends without it)."""
MAX_BATCH: Final = 1000
"""``WatchBroadcastRequest.max_batch``'s largest value."""
_AHEAD: Final = 64
"""Updates read ahead of what the stream has written (``max_batch``, if more)."""

U = TypeVar("U")


async def watch_broadcast(
    core: BroadcastingService,
    watchers: Watchers,
    broadcast_id: int,
    context: grpc.aio.ServicerContext[Any, Any],
    *,
    visible: Visible = None,
    after: str = "",
    from_now: bool = False,
    max_batch: int = 0,
) -> AsyncIterator[pb.WatchBroadcastResponse]:
    """The stream's messages; aborts with the statuses above (the core's errors pass: a
    broadcast whose bot is not ``visible`` is NOT_FOUND, as a missing one). Status moves
    (updates without a result) are not messages: the outcomes after one carry the status.

    With ``max_batch``, a message carries the outcomes read when the stream writes, up to
    ``max_batch`` of them: under a fast broadcast a few messages carry many outcomes (a
    message costs the server, gRPC and the client far more than an outcome in it)."""
    if not 0 <= max_batch <= MAX_BATCH:
        raise InvalidArgument.single(
            "max_batch", f"must be from 0 to {MAX_BATCH} (0: one outcome per message)"
        )
    # The watch's floor, which every cursor carries (the updates are shared: theirs have none).
    kept = KeptFloor()
    updates = core.watch(  # gRPC has no message for the opening: no counts by kind
        broadcast_id,
        visible=visible,
        after=after,
        from_now=from_now,
        on_floor=kept,
        by_kind=False,
    )
    name = f"grpc-watch-{broadcast_id}"
    async for batch in _stream(updates, watchers, context, name=name, most=max_batch):
        if not max_batch:
            for update in batch:
                if update.closing or update.result is not None:
                    yield messages.watch_update(update, kept.floor)
            continue
        outcomes = [update for update in batch if update.result is not None]
        for start in range(0, len(outcomes), max_batch):  # the first batch comes whole
            yield messages.watch_batch(outcomes[start : start + max_batch], kept.floor)
        if batch and batch[-1].closing:  # the end comes last
            yield messages.watch_update(batch[-1], kept.floor)


async def watch_broadcasts(
    core: BroadcastingService,
    watchers: Watchers,
    context: grpc.aio.ServicerContext[Any, Any],
    *,
    visible: Visible = None,
    bot: str = "",
    statuses: Sequence[str] = (),
) -> AsyncIterator[pb.WatchBroadcastsResponse]:
    """``WatchBroadcasts``' messages: ``ready``, then each broadcast as it changes; never
    ends by itself (the core's errors pass: INVALID_ARGUMENT at once)."""
    updates = one_by_one(core.watch_broadcasts(visible=visible, bot=bot, statuses=statuses))
    async for batch in _stream(updates, watchers, context, name="grpc-watch-list"):
        for update in batch:
            yield _list_message(update)


def _list_message(update: Ready | Broadcast) -> pb.WatchBroadcastsResponse:
    if isinstance(update, Ready):
        return pb.WatchBroadcastsResponse(ready=pb.WatchBroadcastsResponse.Ready())
    return pb.WatchBroadcastsResponse(broadcast=messages.broadcast(update, {}))


async def _stream(
    source: AsyncGenerator[list[U], None],
    watchers: Watchers,
    context: grpc.aio.ServicerContext[Any, Any],
    *,
    name: str,
    most: int = 0,
) -> AsyncIterator[list[U]]:
    """``source``'s updates (which come in batches), holding a watch slot, in batches of
    those already read (up to ``most``, or :data:`_AHEAD`; the first batch as it came);
    aborts as the module says."""
    most = max(most, _AHEAD)
    try:
        slot = watchers.acquire()
    except TooManyWatchers as exc:
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
    except ShuttingDown as exc:
        await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
    ahead: ReadAhead[U] | None = None
    try:
        await context.send_initial_metadata(OPEN_METADATA)
        async with aclosing(source) as updates:
            try:
                try:
                    # The first step raises the core's errors (NOT_FOUND) here, at once.
                    first = await slot.wait(anext(updates))
                except StopAsyncIteration:
                    return
                except StreamClosing as closing:
                    await _tell_closing(context, closing)
                yield first
                ahead = ReadAhead(updates, ahead=most, name=name)
                while True:
                    try:
                        items = await slot.take(ahead, most=most)
                    except StreamClosing as closing:
                        await _tell_closing(context, closing)
                    batch: list[U] = []
                    for item in items:
                        if item is END:
                            if batch:
                                yield batch
                            return
                        if isinstance(item, BaseException):
                            if batch:
                                yield batch
                            raise item
                        batch.append(cast(U, item))
                    yield batch
            finally:
                if ahead is not None:  # it reads ``updates``: stopped before they close
                    await ahead.aclose()
    finally:
        slot.release()


async def _tell_closing(
    context: grpc.aio.ServicerContext[Any, Any], closing: StreamClosing
) -> NoReturn:
    try:  # the status leaves at once; the read's clean-up comes after
        await context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
    finally:
        await closing.settle()
