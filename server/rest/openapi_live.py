"""The OpenAPI document's part for the live streams: the list's ``GET /v1/broadcasts/events``
(:mod:`.list_events`), and what a broadcast's own stream adds to its outcomes — ``from=now``
and ``event: status``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from tgbroadcast.server.rest.list_events import LIST_EVENTS_PATH
from tgbroadcast.server.rest.openapi_schemas import Schema, ref

LIST_SSE_EXAMPLE: Final = (
    "event: ready\ndata: {}\n\n"
    'event: broadcast\ndata: {"broadcast_id":12,"bot":"default","status":"running",'
    '"total":3,"sent":1,"failed":0,"pending":2,"...":"..."}\n\n'
)
_FROM = {
    "name": "from",
    "in": "query",
    "description": "`now`: nothing is replayed. The stream opens with an `event: status` "
    "carrying the broadcast's status and counters now (its `id` a position like an "
    "outcome's) and, as `outcome_counts` (`recall_counts`, `edit_counts`: the recall's and "
    "the latest edit's), the outcomes they hold by kind, then the outcomes "
    "recorded from then on; the counters go on from those, "
    "each outcome once (one recorded just before, whose event comes later, is not streamed: "
    "the counters hold it, and a reconnect with any `id` of the stream leaves it out too; an "
    "outcome published again after its worker died may be counted twice: the `end` event "
    "has the exact counters). "
    "Ignored on a reconnect with `Last-Event-ID`, which resumes after that event.",
    "schema": {"type": "string", "enum": ["now"]},
}
_STATUS_EVENTS = (
    " A followed broadcast's move to a status that is not final (paused, resumed, started, "
    'recalling) is an `event: status` (`data`: an `EndEvent`-shaped `{"progress": ...}`, '
    "`id`: its position) in order with the outcomes: every outcome after it carries that "
    "status (an outcome recorded after a pause says `paused`)."
)


def live_paths(
    paths: dict[str, Schema], errors: Callable[..., dict[str, Schema]]
) -> dict[str, Schema]:
    """``paths`` with the list's stream, and ``from`` and the status events on a broadcast's;
    ``errors(*statuses)``: the document's error answers."""
    watch = paths["/v1/broadcasts/{broadcast_id}/events"]["get"]
    watch["parameters"].append(_FROM)
    watch["description"] += _STATUS_EVENTS
    paths[LIST_EVENTS_PATH] = {
        "get": {
            "operationId": "watchBroadcasts",
            "summary": "The list of broadcasts, live, as Server-Sent Events",
            "description": "First `event: ready` (`data: {}`): from then on every change is "
            "streamed, so read `GET /v1/broadcasts` now (and again after each reconnect: this "
            "stream does not resume and has no ids). Then an `event: broadcast` (`data`: a "
            "`Broadcast` as lists show it) each time one of the token's broadcasts is created, "
            "moves to another status, or counts outcomes (at most once a second per "
            "broadcast). It never ends by itself: comment lines (`: heartbeat`) keep it open; "
            "`event: error` means it stopped (reconnect); `event: shutdown` that the server is "
            "draining (reconnect to another instance). With `status`, only broadcasts whose "
            "new status is one of them come: one leaving them is not streamed (to follow a "
            "filtered list, watch without `status` and filter).",
            "tags": ["broadcasts"],
            "parameters": [
                {
                    "name": "status",
                    "in": "query",
                    "description": "Only broadcasts that moved to one of these states (repeat it).",
                    "style": "form",
                    "explode": True,
                    "schema": {"type": "array", "items": ref("BroadcastStatus")},
                },
                {"$ref": "#/components/parameters/Bot"},
            ],
            "responses": {
                "200": {
                    "description": "The event stream.",
                    "content": {
                        "text/event-stream": {
                            "schema": {"type": "string"},
                            "example": LIST_SSE_EXAMPLE,
                        }
                    },
                },
                **errors(400, 401, 503),
            },
        }
    }
    return paths
