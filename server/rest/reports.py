"""REST routes of the reports: a broadcast's deliveries as JSON pages or one CSV file, and its
live outcomes as Server-Sent Events.

* ``GET /v1/broadcasts/{id}/deliveries?outcome=blocked&outcome=pending&page_size=&page_token=``
  — ``{"results": [...], "next_page_token": ""}``, recipients by user id.
* ``GET /v1/broadcasts/{id}/deliveries.csv?outcome=...`` — ``text/csv``, header
  ``user_id,outcome,message_id,error,finished_at,message_ids``, streamed page by page (RFC
  4180 quoting, CRLF line ends; ``message_ids`` space-separated); memory stays flat whatever
  the size.
* ``GET /v1/broadcasts/{id}/events[?from=now]`` — ``text/event-stream``: ``event: result``
  per outcome (``recall``, ``edit``, ``click`` for those outcomes), ``event: status`` per move
  of a followed broadcast to a status that is not final (and first, with ``from=now``), then
  ``event: end`` with the final counters; ``: heartbeat`` comments while idle;
  ``event: shutdown`` when the server drains (reconnect elsewhere). The list's stream,
  ``GET /v1/broadcasts/events``, is :mod:`.list_events`.

Errors found before the body starts (bad filter, unknown broadcast) are problem+json like
every other route. A failure after the body started cannot change the status any more: the
CSV download is cut short (no final chunk, so clients see it failed), the event stream sends
``event: error`` and ends.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from contextlib import aclosing, suppress
from typing import Any, Final, TypeVar

from aiohttp import hdrs, web

from tgbroadcast.core.domain.errors import InvalidArgument
from tgbroadcast.core.domain.model import BroadcastStatus, Delivery, DeliveryResult, DeliveryState
from tgbroadcast.core.service.cursors import NO_FLOOR, KeptFloor
from tgbroadcast.core.service.watch_updates import WatchUpdate
from tgbroadcast.server.auth import visible_bots
from tgbroadcast.server.rest import params, rendering
from tgbroadcast.server.streams import (
    PerUpdate,
    ReadAhead,
    StreamClosing,
    TooManyWatchers,
    Watchers,
    WatchRefused,
    WatchSlot,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_HEARTBEAT: Final = 15.0
HEARTBEAT_KEY: Final = web.AppKey("sse_heartbeat", float)
CSV_HEADER: Final = (
    "user_id",
    "outcome",
    "message_id",
    "error",
    "finished_at",
    "message_ids",
    "recall",
    "recall_error",
    "content_version",
    "edit",
    "edit_error",
    "variant",
    "clicks",
)
"""New columns go last, after those that readers may take by position."""
END_EVENT_ID: Final = "end"
"""The ``id`` of the closing event: a reconnect carrying it as ``Last-Event-ID`` is answered
204 No Content, which tells a browser's ``EventSource`` to stop reconnecting."""
WATCHERS_KEY: Final = web.AppKey("watchers", Watchers)
SHUTDOWN_DETAIL: Final = "the server is shutting down; reconnect to resume"
_WATCH_AHEAD: Final = 64
"""Updates read ahead of a slow SSE client."""


def add_routes(app: web.Application, *, heartbeat: float = DEFAULT_HEARTBEAT) -> None:
    """Register the report routes; ``heartbeat``: seconds between idle SSE comments."""
    if heartbeat <= 0:
        raise ValueError("heartbeat must be positive")
    app[HEARTBEAT_KEY] = heartbeat
    app.router.add_get("/v1/broadcasts/{broadcast_id}/deliveries", list_deliveries)
    app.router.add_get("/v1/broadcasts/{broadcast_id}/deliveries.csv", export_deliveries)
    app.router.add_get("/v1/broadcasts/{broadcast_id}/events", watch_events)


# -- JSON ---------------------------------------------------------------------------------


def delivery_json(value: Delivery) -> dict[str, Any]:
    return {
        "user_id": value.user_id,
        "outcome": value.state.value,
        "error": value.error,
        "message_id": value.message_id,
        "finished_at": rendering.timestamp(value.finished_at),
        "message_ids": list(value.all_message_ids),
        "recall": None if value.recall is None else value.recall.value,
        "recall_error": value.recall_error,
        "content_version": value.content_version if value.state is DeliveryState.SENT else None,
        "edit": None if value.edit is None else value.edit.value,
        "edit_error": value.edit_error,
        "variant": value.variant,
        "clicks": value.clicks,
    }


def _query(request: web.Request, allowed: frozenset[str]) -> list[str]:
    """The ``outcome`` values (repeated, or comma-separated); refuses unknown parameters.
    The core names a bad one ``outcomes[i]``: :data:`_RENAMED` turns that into ``outcome[i]``
    (``i`` counts the values after splitting at commas)."""
    params.check_query(request, allowed)
    return [
        name.strip()
        for value in request.query.getall("outcome", [])
        for name in value.split(",")
        if name.strip()
    ]


_RENAMED: Final = (("outcomes", "outcome"),)


async def list_deliveries(request: web.Request) -> web.Response:
    broadcast_id = params.path_id(request, "broadcast_id")
    outcomes = _query(request, params.PAGE_PARAMETERS | {"outcome"})
    try:
        page = await params.service(request).list_deliveries(
            broadcast_id,
            outcomes=outcomes,
            page_size=params.page_size(request),
            page_token=params.page_token(request),
            visible=visible_bots(),
        )
    except InvalidArgument as exc:
        raise params.renamed(exc, _RENAMED) from None
    return web.json_response(
        {
            "results": [delivery_json(d) for d in page.deliveries],
            "next_page_token": page.next_page_token,
        }
    )


# -- CSV ----------------------------------------------------------------------------------


def csv_rows(rows: Iterable[Iterable[object]]) -> bytes:
    """``rows`` as CSV (RFC 4180: quoted where needed, CRLF line ends), UTF-8."""
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue().encode()


def _csv_record(value: Delivery) -> tuple[object, ...]:
    return (
        value.user_id,
        value.state.value,
        "" if value.message_id is None else value.message_id,
        value.error or "",
        rendering.timestamp(value.finished_at) or "",
        " ".join(map(str, value.all_message_ids)),
        "" if value.recall is None else value.recall.value,
        value.recall_error or "",
        value.content_version if value.state is DeliveryState.SENT else "",
        "" if value.edit is None else value.edit.value,
        value.edit_error or "",
        value.variant or "",
        value.clicks,
    )


async def export_deliveries(request: web.Request) -> web.StreamResponse:
    broadcast_id = params.path_id(request, "broadcast_id")
    outcomes = _query(request, frozenset({"outcome"}))
    service = params.service(request)
    exported = service.export_deliveries(broadcast_id, outcomes=outcomes, visible=visible_bots())
    async with aclosing(exported) as pages:
        # Bad input and unknown ids fail here, as problems. (Not ``anext(pages, ())``: on
        # CPython 3.11 that raises SystemError when the generator returns at once.)
        try:
            first: tuple[Delivery, ...] = await anext(pages)
        except StopAsyncIteration:
            first = ()
        except InvalidArgument as exc:
            raise params.renamed(exc, _RENAMED) from None
        response = web.StreamResponse(
            headers={
                "Content-Disposition": (
                    f'attachment; filename="broadcast-{broadcast_id}-deliveries.csv"'
                ),
                "Cache-Control": "no-store",
            }
        )
        response.content_type = "text/csv"
        response.charset = "utf-8"
        if request.method == hdrs.METH_HEAD:
            return response  # its headers alone (aiohttp would write a streamed body to it)
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            await response.write(csv_rows([CSV_HEADER]))
            if first:
                await response.write(csv_rows(_csv_record(d) for d in first))
            async for page in pages:
                await response.write(csv_rows(_csv_record(d) for d in page))
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client went away
        except Exception:
            logger.exception("CSV export cut short", extra={"broadcast_id": broadcast_id})
            if request.transport is not None:
                request.transport.close()  # no last chunk: the client sees the failure
    return response


# -- Server-Sent Events -------------------------------------------------------------------


def progress_json(update: WatchUpdate) -> dict[str, Any]:
    progress = {
        "status": update.status.value,
        "total": update.total,
        "sent": update.sent,
        "failed": update.failed,
        "pending": update.pending,
    }
    if _recalled(update):
        progress["recalled"] = update.recalled
    if update.edited:
        progress["edited"] = update.edited
    return progress


def _recalled(update: WatchUpdate) -> bool:
    """Whether the progress shows ``recalled`` (only a recalled broadcast's does)."""
    return bool(update.recalled) or update.status in _RECALL_STATUSES


_RECALL_STATUSES: Final = frozenset({BroadcastStatus.RECALLING, BroadcastStatus.RECALLED})


def sse_response() -> web.StreamResponse:
    """An event stream's response, before its first event. A HEAD is answered with it as it
    is (aiohttp would write a streamed body to a HEAD too)."""
    return web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # nginx: pass each event on at once
        }
    )


def sse_event(event: str, data: dict[str, Any], *, event_id: str | None = None) -> bytes:
    """One event; ``data`` is compact JSON on one line."""
    lines = [] if event_id is None else [f"id: {event_id}"]
    lines += [f"event: {event}", "data: " + json.dumps(data, separators=(",", ":"))]
    return ("\n".join(lines) + "\n\n").encode()


async def watch_events(request: web.Request) -> web.StreamResponse:
    """``WatchBroadcast`` as Server-Sent Events.

    A connection streams the broadcast from its first outcome (earlier outcomes replayed,
    then live ones); ``id`` is the outcome's cursor (opaque). With ``?from=now`` (and no
    ``Last-Event-ID``) nothing is replayed: the stream opens with ``event: status`` carrying
    the broadcast's status and counters now (its ``id`` a cursor like an outcome's), then
    the outcomes recorded from then on. Each move of a followed broadcast to a status that is
    not final is an ``event: status`` in order with the outcomes, and the outcomes after it
    carry that status. A reconnect with
    ``Last-Event-ID`` (what browsers' ``EventSource`` sends by itself) resumes after that
    outcome, in the same order, each once, with the progress counters going on; after the
    closing event (``Last-Event-ID: end``) it is answered 204 No Content. An id that is not a
    cursor starts from the first outcome.

    Each stream holds a place among the server's open watch streams
    (:mod:`tgbroadcast.server.streams`): 429 when ``server.max_watchers`` are open, 503 while
    draining; when the server drains, an open stream gets ``event: shutdown`` and ends.
    """
    broadcast_id = params.path_id(request, "broadcast_id")
    _query(request, frozenset({"from"}))
    start = params.single(request, "from")
    if start not in (None, "now"):
        raise InvalidArgument.single("from", "must be now (or left out: from the first outcome)")
    service = params.service(request)
    visible = visible_bots()
    await service.watchable(broadcast_id, visible=visible)  # unknown or hidden: a 404
    last_event_id = request.headers.get("Last-Event-ID", "").strip()
    if last_event_id == END_EVENT_ID:
        return web.Response(status=204)
    response = sse_response()
    try:
        slot = request.app[WATCHERS_KEY].acquire()
    except WatchRefused as exc:
        return rendering.problem(429 if isinstance(exc, TooManyWatchers) else 503, str(exc))
    if request.method == hdrs.METH_HEAD:  # the GET's answer, without its stream
        slot.release()
        return response
    ahead: ReadAhead[WatchUpdate] | None = None
    # The watch's floor, which every id after the opening's carries (the events are shared:
    # their ids have none).
    kept = KeptFloor()

    try:
        await response.prepare(request)
        ahead = ReadAhead(
            service.watch(
                broadcast_id,
                visible=visible,
                after=last_event_id,
                from_now=start == "now",
                on_floor=kept,
            ),
            ahead=_WATCH_AHEAD,
            name=f"sse-watch-{broadcast_id}",
        )
        await response.write(f": broadcast {broadcast_id}\n\n".encode())

        def render(items: Sequence[object]) -> tuple[bytes, bool]:
            chunk: list[bytes] = []
            for item in items:
                event, ended = _event_of(item, broadcast_id)
                if kept.suffix and event.startswith(b"id: s") and _shared(item):
                    event = _floored(event, kept.suffix)
                chunk.append(event)
                if ended:
                    return b"".join(chunk), True
            return b"".join(chunk), False

        await stream_events(request, response, slot, ahead, render)
        with suppress(ConnectionResetError):
            await response.write_eof()
    except ConnectionResetError:
        pass  # the client went away: stop following
    finally:
        slot.release()
        if ahead is not None:
            await ahead.aclose()
    return response


async def stream_events(
    request: web.Request,
    response: web.StreamResponse,
    slot: WatchSlot,
    ahead: ReadAhead[T],
    render: Callable[[Sequence[object]], tuple[bytes, bool]],
) -> None:
    """Write ``ahead``'s updates to the event stream ``response`` while its client is there:
    every update already read at once, in one write (``render`` makes the bytes of a batch and
    says whether the stream ends with it); a heartbeat comment while none comes; when the
    server drains, ``event: shutdown`` and the end."""
    heartbeat = request.app[HEARTBEAT_KEY]
    ended = False
    while not ended and request.transport is not None and not request.transport.is_closing():
        try:
            items = await slot.take(ahead, heartbeat)
        except TimeoutError:
            await response.write(b": heartbeat\n\n")
            continue
        except StreamClosing as closing:
            try:
                await response.write(sse_event("shutdown", {"detail": SHUTDOWN_DETAIL}))
            finally:
                await closing.settle()
            return
        chunk, ended = render(items)
        await response.write(chunk)


def _event_of(item: WatchUpdate | BaseException | object, broadcast_id: int) -> tuple[bytes, bool]:
    """The SSE event of one update, and whether the stream ends with it."""
    if isinstance(item, WatchUpdate):
        return _SHARED_EVENT(item)
    if isinstance(item, BaseException):
        logger.warning(
            "event stream stopped",
            extra={"broadcast_id": broadcast_id, "error": type(item).__name__},
        )
    return sse_event("error", {"detail": "the stream stopped; reconnect to resume"}), True


def _shared(item: object) -> bool:
    """Whether ``item`` is an update the watchers share (not a watch's own opening, whose id
    has its floor already)."""
    return isinstance(item, WatchUpdate) and item.floor is NO_FLOOR


def _floored(event: bytes, floor: bytes) -> bytes:
    """A shared event whose ``id`` is a stream cursor, with ``floor`` (spelled, ``~`` and
    all) added to its id."""
    line_end = event.index(b"\n")
    return b"%s%s%s" % (event[:line_end], floor, event[line_end:])


def _update_event(item: WatchUpdate) -> tuple[bytes, bool]:
    """An update's SSE event, and whether the stream ends with it."""
    if item.closing:
        return sse_event("end", {"progress": progress_json(item)}, event_id=END_EVENT_ID), True
    if item.result is None:  # a status move, or a stream from now's opening
        status: dict[str, Any] = {"progress": progress_json(item)}
        if item.outcome_counts is not None:
            status["outcome_counts"] = {s.value: n for s, n in item.outcome_counts.items()}
            status["recall_counts"] = {o.value: n for o, n in (item.recall_counts or {}).items()}
            status["edit_counts"] = {o.value: n for o, n in (item.edit_counts or {}).items()}
            status["content_version"] = item.version  # the version edit_counts are of
        return sse_event(item.kind, status, event_id=item.cursor), False
    # The counters by hand, not json.dumps: one per outcome per place of the streams (a
    # status is a plain word, the counters integers).
    progress = (
        f'{{"status":"{item.status.value}","total":{item.total},"sent":{item.sent},'
        f'"failed":{item.failed},"pending":{item.pending}'
    )
    if _recalled(item):
        progress += f',"recalled":{item.recalled}'
    if item.edited:
        progress += f',"edited":{item.edited}'
    data = _SHARED_RESULT(item.result)
    result = item.result
    fields: dict[str, Any] = {}
    if result.recall is not None:
        fields |= {"recall": result.recall.value, "recall_error": result.recall_error}
    if result.edit is not None:
        fields |= {
            "content_version": result.content_version,
            "edit": result.edit.value,
            "edit_error": result.edit_error,
        }
    if fields:
        data += "," + json.dumps(fields, separators=(",", ":"))[1:-1]
    data = f'{data},"progress":{progress}}}}}'
    # A live recall or edit is another event of the recipient, named apart (its kind); a
    # replay's one event per recipient carries them all.
    return f"id: {item.cursor}\nevent: {item.kind}\ndata: {data}\n\n".encode(), False


def _result_json(result: DeliveryResult) -> str:
    """A result event's data up to its progress: ``{"user_id":...,"finished_at":"..."``."""
    data = {
        "user_id": result.user_id,
        "outcome": result.state.value,
        "error": result.error,
        "message_id": result.message_id,
        "finished_at": rendering.timestamp(result.finished_at),
        "message_ids": list(result.all_message_ids),
    }
    if result.variant is not None:
        data["variant"] = result.variant
    if result.click is not None:
        data["click"] = result.click
    if result.clicks:
        data["clicks"] = result.clicks
    return json.dumps(data, separators=(",", ":"))[:-1]


_SHARED_RESULT: PerUpdate[DeliveryResult, str] = PerUpdate(_result_json)
"""An outcome's JSON, written once for all the streams that send it."""
_SHARED_EVENT: PerUpdate[WatchUpdate, tuple[bytes, bool]] = PerUpdate(_update_event, size=16384)
"""An update's event, written once for all the streams at the same place that send it (they
share the update, :class:`~tgbroadcast.core.service.watching.SharedSteps`)."""
